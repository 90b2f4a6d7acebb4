"""Parity figures: how far an artifact's outputs are from the reference's, and whether that passes.

Text features are compared per token over valid tokens only (pads carry no meaning downstream: the heads
mask them); other outputs per sample, flattened.
"""

from __future__ import annotations

import numpy as np

from litetext.models.graphs import Tolerance


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    # Two all-zero rows agree exactly; one zero row against a non-zero one does not.
    return np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(a - b).sum(-1) == 0, 1.0, 0.0))


def tensor_parity(reference: np.ndarray, candidate: np.ndarray, valid: np.ndarray | None = None,
                  per_token: bool = False) -> dict[str, float]:
    """max error and cosine of one output. `valid` [B, L] selects tokens when `per_token` is set."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    ref = reference.astype(np.float64)
    got = candidate.astype(np.float64)
    if per_token:
        rows_ref, rows_got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
        if valid is not None:
            keep = valid.reshape(-1).astype(bool)
            rows_ref, rows_got = rows_ref[keep], rows_got[keep]
    else:
        rows_ref, rows_got = ref.reshape(ref.shape[0], -1), got.reshape(got.shape[0], -1)
    cos = _cosine_rows(rows_ref, rows_got)
    return {
        "max_abs_error": float(np.abs(rows_ref - rows_got).max()) if rows_ref.size else 0.0,
        "max_abs_reference": float(np.abs(rows_ref).max()) if rows_ref.size else 0.0,
        "cosine_mean": float(cos.mean()) if cos.size else 1.0,
        "cosine_worst_1pct": float(np.percentile(cos, 1)) if cos.size else 1.0,
        "cosine_min": float(cos.min()) if cos.size else 1.0,
        "count": int(cos.size),
    }


def passes(figures: dict[str, float], tolerance: Tolerance) -> bool:
    if tolerance.atol is not None:
        if figures["max_abs_error"] > tolerance.atol + tolerance.rtol * figures["max_abs_reference"]:
            return False
    return (figures["cosine_min"] >= tolerance.min_cosine
            and figures["cosine_mean"] >= tolerance.min_cosine_mean
            and figures["cosine_worst_1pct"] >= tolerance.min_cosine_worst_1pct)


def merge_parity(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine figures measured on several batches of the same output."""
    if len(parts) == 1:
        return parts[0]
    count = sum(p["count"] for p in parts)
    return {
        "max_abs_error": max(p["max_abs_error"] for p in parts),
        "max_abs_reference": max(p["max_abs_reference"] for p in parts),
        "cosine_mean": sum(p["cosine_mean"] * p["count"] for p in parts) / max(count, 1),
        # The worst 1% of the union is bounded by the worst batch's; report that (conservative).
        "cosine_worst_1pct": min(p["cosine_worst_1pct"] for p in parts),
        "cosine_min": min(p["cosine_min"] for p in parts),
        "count": count,
    }


# An exported graph keeps the instances an app sees when at most this share of them is lost or gained and the
# matched ones overlap the reference this much (mask IoU, mean).
MAX_INSTANCES_CHANGED = 0.1
MIN_MATCHED_MASK_IOU = 0.9


def instances_agree(agreement: dict) -> bool:
    reference = agreement["reference_instances"]
    changed = agreement["lost"] + agreement["gained"]
    if changed > MAX_INSTANCES_CHANGED * max(reference, 1):
        return False
    return agreement["matched"] == 0 or agreement["mask_iou_mean"] >= MIN_MATCHED_MASK_IOU
