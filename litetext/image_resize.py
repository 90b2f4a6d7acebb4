"""Upstream's image resize in numpy, so that apps and litetext feed the vision encoder what upstream does.

Upstream (SimonZeng7108/efficientsam3, Sam3Processor) turns the uint8 image into 1008 x 1008 with torchvision's
`v2.Resize` (bilinear, antialias on), keeps it uint8, then scales to 0..1 and normalises with mean 0.5 and std
0.5. Antialiased bilinear is a separable triangle filter whose support grows with the downscale factor (PIL's
and ATen's `_upsample_bilinear2d_aa`): output pixel i of an axis, at scale s = in / out, centres at
c = s (i + 0.5), reads inputs j in [trunc(c - r + 0.5), trunc(c + r + 0.5)) with r = max(s, 1), weighted by
max(0, 1 - |(j - c + 0.5) / max(s, 1)|), normalised to sum 1. Upscaling (s < 1) is plain bilinear with
half-pixel centres.

torchvision computes this two ways: in float then rounded (on a GPU, upstream's device, and on CPUs without AVX2),
and on AVX2 CPUs with ATen's fixed-point uint8 kernel, which rounds after each pass (as PIL does) and so lands one
step away on 10-20% of pixels. This module computes the float way; tests/test_image_resize.py measures both.
"""

from __future__ import annotations

import numpy as np

RESIZE_DESCRIPTION = (
    "antialiased bilinear (torchvision v2.Resize on the uint8 image, antialias=True: a triangle filter whose "
    "support grows with the downscale factor; computed in float, as on a GPU) to image_size x image_size, aspect "
    "ratio not kept, rounded to uint8, then rescale and normalize; litetext.image_resize"
)


def axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(input index [out, K] int64, weight [out, K] float64) of the triangle filter along one axis."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = scale * (np.arange(out_size) + 0.5)
    starts = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # astype truncates, as C's cast
    stops = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    width = int((stops - starts).max())
    taps = starts[:, None] + np.arange(width)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs((taps - centers[:, None] + 0.5) / support))
    weights[taps >= stops[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.minimum(taps, in_size - 1), weights


def _resize_axis(x: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    taps, weights = axis_taps(x.shape[axis], out_size)
    x = np.moveaxis(x, axis, 0)
    out = np.zeros((out_size, *x.shape[1:]), dtype=np.float32)
    shape = (out_size,) + (1,) * (x.ndim - 1)
    for k in range(taps.shape[1]):  # a few taps: a gather and a multiply-add per tap
        out += weights[:, k].astype(np.float32).reshape(shape) * x[taps[:, k]]
    return np.moveaxis(out, 0, axis)


def resize_antialiased(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [height, width, C], antialiased bilinear, rounded half to even as torch."""
    x = np.asarray(rgb, dtype=np.float32)
    x = _resize_axis(_resize_axis(x, width, axis=1), height, axis=0)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def pixel_values(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> pixel_values float32 [1, 3, S, S] as upstream: resize, /255, (x - 0.5) / 0.5."""
    x = resize_antialiased(rgb, image_size, image_size).astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
