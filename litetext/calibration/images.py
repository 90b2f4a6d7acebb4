"""Reading an image someone gave us: one loader for prediction, parity, calibration and benchmarks.

- A pixel limit (LITETEXT_MAX_IMAGE_PIXELS, or `max_pixels=`) is checked on the header, before any pixel is
  decoded: past it, one clear error instead of PIL's DecompressionBombError or gigabytes of memory.
- Every mode becomes uint8 RGB by its meaning: 16-bit greyscale is scaled (65535 -> 255), not clipped;
  palette images through their palette; CMYK by PIL's conversion; alpha (RGBA, LA, palette transparency) is
  composited over white, what a viewer shows for a transparent background.
- `max_side=` reduces a larger image (aspect kept) while it is read: JPEG decodes at 1/2, 1/4 or 1/8 scale
  (PIL's draft), other formats are decoded and then reduced by an integer box filter, then resized.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np

from litetext.errors import LitetextError

MAX_PIXELS_ENV = "LITETEXT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; a 30000 x 30000 PNG would need 2.7 GB as RGB
PREDICT_MAX_SIDE = 2048  # predictions: the graphs see 1008 px; masks past twice that add only memory and time
_PIL_LIMIT = threading.Lock()  # PIL's own bomb check is a module global


def max_pixels_allowed(max_pixels: int | None = None) -> int:
    """`max_pixels`, else LITETEXT_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is not None:
        return int(max_pixels)
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is None:
        return DEFAULT_MAX_PIXELS
    if not text.strip().isdigit() or int(text) < 1:
        raise LitetextError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, not {text!r}")
    return int(text)


def read_rgb(path: str | Path, max_pixels: int | None = None, max_side: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3] (see the module docstring for the limits and conversions)."""
    from PIL import Image

    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # never opens: a FIFO cannot block here
    except FileNotFoundError:
        raise LitetextError(f"image {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise LitetextError(f"image {path} is not a regular file")
    limit = max_pixels_allowed(max_pixels)
    try:
        with _PIL_LIMIT:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # this module checks the limit itself
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with image:
            width, height = image.size
            if width * height > limit:
                raise LitetextError(
                    f"image {path} is {width} x {height} ({width * height / 1e6:.0f} megapixels), more than the "
                    f"{limit / 1e6:.0f} allowed; shrink it, or raise the limit with {MAX_PIXELS_ENV}"
                )
            if max_side and max(width, height) > max_side:
                scale = max_side / max(width, height)
                image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))  # JPEG only
            image.load()
            return _to_rgb(_reduced(image, max_side))
    except LitetextError:
        raise
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, struct.error... for damaged files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LitetextError(f"cannot read image {path}: {reason}") from None


def _reduced(image, max_side: int | None):
    """The image with its longer side at most `max_side` (aspect kept): a box reduce by a whole factor, then a
    resize for the rest."""
    from PIL import Image

    if not max_side or max(image.size) <= max_side:
        return image
    factor = max(image.size) // max_side
    if factor >= 2:
        image = image.reduce(factor)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


def _to_rgb(image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit greyscale (PNG, TIFF): 0..65535 -> 0..255
        grey = np.asarray(image).astype(np.float32)
        grey = np.clip(np.round(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":  # floating point: read as 0..1 when it fits there, else as 0..255
        grey = np.asarray(image, dtype=np.float32)
        grey = grey * 255.0 if np.nanmax(grey, initial=0.0) <= 1.0 else grey
        grey = np.clip(np.nan_to_num(np.round(grey)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        rgba = np.asarray(image).astype(np.float32)
        alpha = rgba[..., 3:] / 255.0
        return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.asarray(image.convert("RGB"))
