"""Tensor parity figures: compared a block of rows at a time (bounded memory at 1008 px) with the same figures as
whole arrays in float64, and an overflowed candidate (NaN) never passes."""

import numpy as np
import pytest

from litetext.calibration import parity
from litetext.models.graphs import Tolerance


def whole(reference, candidate):
    a, b = reference.reshape(len(reference), -1).astype(np.float64), candidate.reshape(len(candidate), -1).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"max_abs_error": np.abs(a - b).max(), "max_abs_reference": np.abs(a).max(), "cosine_mean": cos.mean(),
            "cosine_min": cos.min()}


@pytest.mark.parametrize("block", [7, 64, 2**23])  # smaller than a row, a few rows, everything at once
def test_blocks_give_the_whole_array_figures(monkeypatch, block):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    candidate = (reference + rng.normal(scale=0.3, size=reference.shape)).astype(np.float32)
    monkeypatch.setattr(parity, "BLOCK_ELEMENTS", block)
    got = parity.tensor_parity(reference, candidate)
    for key, want in whole(reference, candidate).items():
        assert got[key] == pytest.approx(want, rel=1e-12), key
    tokens = parity.tensor_parity(reference[:, 0], candidate[:, 0], np.ones((5, 4)), per_token=True)
    assert tokens["count"] == 20


def test_an_overflowed_candidate_never_passes():
    reference = np.ones((2, 10), np.float32)
    candidate = reference.copy()
    candidate[1, 3] = np.nan
    figures = parity.tensor_parity(reference, candidate)
    assert np.isnan(figures["max_abs_error"])  # said as it is, not hidden as 0
    assert not parity.passes(figures, Tolerance(atol=10.0, rtol=0.0, min_cosine=0.0))
