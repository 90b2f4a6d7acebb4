"""Images through one loader: a pixel limit checked on the header, every mode converted by its meaning (16-bit
scaled, not clipped; alpha over white), large images reduced while read, damaged files as one line."""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import builtin_image
from hostile import one_line_error, run_cli, tiny_bundle
from litetext.calibration.data import load_rgb
from litetext.calibration.images import MAX_PIXELS_ENV, read_rgb
from litetext.errors import LitetextError


def write_png16(path, array, color_type):
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB): color type 0 grey, 2 RGB."""
    h, w = array.shape[:2]
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)  # noqa
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def png_header_only(path, width, height):
    """A PNG that claims width x height but holds almost no data: enough to test a limit read on the header."""
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)  # noqa
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 257 * 10, 32768, 65535]], dtype=np.uint16)
    rgb = load_rgb(write_png16(tmp_path / "g.png", grey, 0))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 10, 128, 255]  # PIL's own conversion gives [0, 255, 255, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_16_bit_rgb_keeps_its_colours(tmp_path):
    array = np.zeros((2, 3, 3), dtype=np.uint16)
    array[..., 0], array[..., 1], array[..., 2] = 65535, 32768, 257 * 10
    assert load_rgb(write_png16(tmp_path / "c.png", array, 2))[0, 0].tolist() == [255, 128, 10]


def test_alpha_palette_cmyk_and_grey(tmp_path):
    rgba = Image.new("RGBA", (4, 2), (200, 0, 0, 0))
    rgba.putpixel((1, 0), (200, 0, 0, 255))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    rgba.save(tmp_path / "a.png")
    got = load_rgb(tmp_path / "a.png")
    assert got[0, 0].tolist() == [255, 255, 255]  # transparent: white, not the hidden red
    assert got[0, 1].tolist() == [200, 0, 0]
    assert got[0, 2].tolist() == [127, 127, 127]  # half black over white

    palette = rgba.convert("RGB").quantize(4)
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "p.png", transparency=palette.getpixel((0, 0)))
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert load_rgb(tmp_path / "p.png")[0, 0].tolist() == [255, 255, 255]
    Image.new("P", (2, 2), 0).save(tmp_path / "p2.png")
    assert load_rgb(tmp_path / "p2.png").shape == (2, 2, 3)

    Image.new("CMYK", (2, 2), (255, 0, 0, 0)).save(tmp_path / "c.tif")
    assert load_rgb(tmp_path / "c.tif")[0, 0].tolist() == [0, 255, 255]  # full cyan
    Image.new("LA", (2, 2), (50, 0)).save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png")[0, 0].tolist() == [255, 255, 255]
    Image.new("L", (2, 2), 50).save(tmp_path / "l.png")
    assert load_rgb(tmp_path / "l.png")[0, 0].tolist() == [50, 50, 50]


def test_the_pixel_limit_is_read_from_the_header(tmp_path, monkeypatch):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(LitetextError, match=r"30000 x 30000 \(900 megapixels\), more than the 64 allowed"):
        load_rgb(bomb)
    small = builtin_image()
    with pytest.raises(LitetextError, match="more than the"):
        load_rgb(small, max_pixels=100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    with pytest.raises(LitetextError, match=MAX_PIXELS_ENV):
        load_rgb(small)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(LitetextError, match="must be a positive whole number"):
        load_rgb(small)


def test_large_images_are_reduced_while_read(tmp_path):
    Image.new("RGB", (4000, 1000), (10, 200, 30)).save(tmp_path / "wide.jpg", quality=95)
    jpeg = Image.open(tmp_path / "wide.jpg")
    jpeg.draft("RGB", (1000, 250))
    assert jpeg.size == (1000, 250)  # what the loader asks for: JPEG decodes at 1/4 scale, never at full size
    got = read_rgb(tmp_path / "wide.jpg", max_side=1000)
    assert got.shape == (250, 1000, 3) and abs(int(got[100, 500, 1]) - 200) <= 3
    Image.new("RGB", (3001, 700), (1, 2, 3)).save(tmp_path / "wide.png")
    got = read_rgb(tmp_path / "wide.png", max_side=1000)
    assert max(got.shape[:2]) <= 1000 and got.shape[1] / got.shape[0] == pytest.approx(3001 / 700, rel=0.01)
    assert read_rgb(tmp_path / "wide.png").shape == (700, 3001, 3)  # no max_side: full size


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"not an image at all"), "cannot read image"),
    (lambda p: p.write_bytes(open(builtin_image(), "rb").read()[:2000]), "cannot read image"),
    (lambda p: os.mkfifo(p), "is not a regular file"),
    (lambda p: p.mkdir(), "is not a regular file"),
])
def test_damaged_images_are_one_line(tmp_path, make, message):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(LitetextError, match=message) as error:
        load_rgb(path)
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def test_predict_on_a_bomb_a_16_bit_and_a_large_image(bundle, tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    line = one_line_error(run_cli("predict", bundle, "--image", bomb, "--prompt", "cat", "-o", tmp_path / "p"))
    assert "more than the 64 allowed" in line and not (tmp_path / "p").exists()

    grey = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    image = write_png16(tmp_path / "g16.png", grey, 0)
    result = run_cli("predict", bundle, "--image", image, "--prompt", "cat", "--threshold", "0", "-o", tmp_path / "g")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "g" / "g16" / "instances.json").read_text())  # one folder per image
    assert written["image_size"] == [64, 48]
    mask = written["prompts"]["cat"][0]["mask"]
    assert Image.open(tmp_path / "g" / "g16" / mask).size == (64, 48)

    Image.new("RGB", (5000, 300), (90, 90, 90)).save(tmp_path / "big.png")
    result = run_cli("predict", bundle, "--image", tmp_path / "big.png", "--prompt", "cat", "--threshold", "0",
                     "-o", tmp_path / "big")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "big" / "big" / "instances.json").read_text())
    assert written["image_size"] == [2048, 123]
    assert Image.open(tmp_path / "big" / "big" / written["prompts"]["cat"][0]["mask"]).size == (2048, 123)
