"""Upstream's resize (torchvision v2.Resize, antialiased bilinear, on the uint8 image) in numpy
(litetext.image_resize), against two references: one written here from the documented algorithm, and ATen's own
antialiased kernel (torch.nn.functional.interpolate(..., antialias=True), which torchvision calls)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from litetext.calibration.data import load_rgb, preprocess_image
from litetext.image_resize import pixel_values, resize_antialiased


def reference_weights(in_size: int, out_size: int) -> np.ndarray:
    """Dense [out, in] matrix of the antialiased bilinear (triangle) filter, one output at a time, as
    torchvision documents it (PIL's / ATen's _upsample_bilinear2d_aa): the filter's support is 1 input pixel,
    times the downscale factor when shrinking; taps are centred on half-pixel positions and normalised."""
    scale = in_size / out_size
    stretch = scale if scale > 1 else 1.0
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        first = max(int(center - stretch + 0.5), 0)  # int() truncates toward zero, as C's cast
        last = min(int(center + stretch + 0.5), in_size)
        for j in range(first, last):
            distance = abs(j + 0.5 - center) / stretch
            matrix[i, j] = max(0.0, 1.0 - distance)
        matrix[i] /= matrix[i].sum()
    return matrix


def reference_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    rows, cols = reference_weights(rgb.shape[0], height), reference_weights(rgb.shape[1], width)
    out = np.stack([rows @ rgb[:, :, c].astype(np.float64) @ cols.T for c in range(rgb.shape[2])], axis=-1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def aten_resize(rgb: np.ndarray, height: int, width: int, uint8: bool) -> np.ndarray:
    """ATen's kernel: on uint8 (torchvision's path on AVX2 CPUs) or on float, rounded (its other path)."""
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]
    if not uint8:
        x = x.float()
    y = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    if not uint8:
        y = y.round().clamp(0, 255).to(torch.uint8)
    return y[0].permute(1, 2, 0).numpy()


def _steps(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def _photos(shared):
    photos = sorted(p for p in (shared / "images").iterdir() if p.suffix in (".png", ".jpg"))
    assert photos
    return photos


@pytest.mark.parametrize("shape, size", [((37, 53, 3), (101, 89)), ((300, 451, 3), (64, 77)),
                                         ((120, 90, 3), (120, 30)), ((64, 64, 1), (64, 64))])
def test_resize_matches_both_references_on_random_images(shape, size):
    rgb = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ours = resize_antialiased(rgb, *size)
    assert ours.shape == (*size, shape[2]) and ours.dtype == np.uint8
    assert _steps(ours, reference_resize(rgb, *size)) <= 1
    assert _steps(ours, aten_resize(rgb, *size, uint8=False)) <= 1
    assert _steps(ours, aten_resize(rgb, *size, uint8=True)) <= 1
    if shape[:2] == size:
        np.testing.assert_array_equal(ours, rgb)  # same size: the identity


@pytest.mark.parametrize("size", [1008, 288])  # the model's input (upscaling here) and a downscale
def test_resize_is_within_one_step_of_upstream_on_the_shared_photos(shared, size):
    from PIL import Image

    for path in _photos(shared):
        rgb = load_rgb(path)
        ours = resize_antialiased(rgb, size, size)
        reference, aten_float, aten_uint8 = (reference_resize(rgb, size, size), aten_resize(rgb, size, size, False),
                                             aten_resize(rgb, size, size, True))
        assert _steps(ours, reference) <= 1, path.name
        assert _steps(ours, aten_float) <= 1, path.name
        assert _steps(ours, aten_uint8) <= 1, path.name
        # torchvision on a GPU (upstream's device) and on CPUs without AVX2 interpolates in float and rounds:
        # the same up to values on a rounding edge. On AVX2 CPUs it runs ATen's fixed-point uint8 kernel, which
        # rounds after each pass: one step off on ~10-20% of pixels, and within one step of this.
        assert (ours != aten_float).mean() < 0.005, path.name
        assert _steps(reference, aten_float) <= 1 and (reference != aten_float).mean() < 0.005, path.name
        if size == 1008:  # PIL's resize (litetext's before) rounds twice as well: why this module exists
            pil = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
            assert (pil != aten_float).mean() > 10 * (ours != aten_float).mean(), path.name


def test_pixel_values_are_upstreams_normalisation(shared):
    rgb = load_rgb(_photos(shared)[0])
    x = pixel_values(rgb, 112)
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    want = (aten_resize(rgb, 112, 112, uint8=False).astype(np.float32) / 255.0 - 0.5) / 0.5
    assert float(np.abs(x[0].transpose(1, 2, 0) - want).max()) <= 2 / 255 + 1e-6  # one uint8 step
    np.testing.assert_array_equal(preprocess_image(rgb, 112), x)  # calibration, export and predict use it
