"""Parity figures: how far an artifact's outputs are from the reference's, and whether that passes.

Text features are compared per token over valid tokens only (pads carry no meaning downstream: the heads
mask them); other outputs per sample, flattened. Heads: also instance agreement, what an app sees: both outputs
go through `postprocess` at a score threshold, and instances are matched greedily by mask IoU (highest pair
first, at least `match_iou`).
"""

from __future__ import annotations

import numpy as np

from litetext.models.graphs import Tolerance
from litetext.postprocess import postprocess


# Rows are compared in float64 a block at a time: the heads' mask logits at 1008 px are 66 MiB a sample in
# float32, and whole-batch float64 copies made the heads' parity check the peak of a full-size export.
BLOCK_ELEMENTS = 2**23


def _row_blocks(rows: int, row_size: int):
    step = max(1, BLOCK_ELEMENTS // max(row_size, 1))
    return (slice(start, start + step) for start in range(0, rows, step))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of `a` with the same row of `b` (last axis), in float64."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    out = np.empty(len(a2))
    for rows in _row_blocks(len(a2), a2.shape[-1]):
        x, y = a2[rows].astype(np.float64), b2[rows].astype(np.float64)
        num = (x * y).sum(-1)
        den = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
        # Two all-zero rows agree exactly; one zero row against a non-zero one does not.
        out[rows] = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(x - y).sum(-1) == 0, 1.0, 0.0))
    return out.reshape(a.shape[:-1])


def tensor_parity(reference: np.ndarray, candidate: np.ndarray, valid: np.ndarray | None = None,
                  per_token: bool = False) -> dict[str, float]:
    """max error and cosine of one output. `valid` [B, L] selects tokens when `per_token` is set."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    if per_token:
        rows_ref, rows_got = reference.reshape(-1, reference.shape[-1]), candidate.reshape(-1, candidate.shape[-1])
        if valid is not None:
            keep = valid.reshape(-1).astype(bool)
            rows_ref, rows_got = rows_ref[keep], rows_got[keep]
    else:
        rows_ref, rows_got = reference.reshape(reference.shape[0], -1), candidate.reshape(candidate.shape[0], -1)
    cos = cosine_rows(rows_ref, rows_got)
    max_error = max_reference = 0.0
    for rows in _row_blocks(len(rows_ref), rows_ref.shape[-1]):
        ref, got = rows_ref[rows].astype(np.float64), rows_got[rows].astype(np.float64)
        if ref.size:  # np.maximum keeps a NaN (an overflowed candidate) where max() would drop it
            max_error = float(np.maximum(max_error, np.abs(ref - got).max()))
            max_reference = float(np.maximum(max_reference, np.abs(ref).max()))
    return {
        "max_abs_error": max_error,
        "max_abs_reference": max_reference,
        "cosine_mean": float(cos.mean()) if cos.size else 1.0,
        "cosine_worst_1pct": float(np.percentile(cos, 1)) if cos.size else 1.0,
        "cosine_min": float(cos.min()) if cos.size else 1.0,
        "count": int(cos.size),
    }


def passes(figures: dict[str, float], tolerance: Tolerance) -> bool:
    if not np.isfinite(figures["max_abs_error"]):  # a NaN or inf in the candidate (fp16 overflow) never passes
        return False
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


def output_parity(references: list[dict[str, np.ndarray]], candidates: list[dict[str, np.ndarray]],
                  feeds: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    parts: dict[str, list] = {}
    for want, got, feed in zip(references, candidates, feeds):
        for name in want:
            per_token = name == "text_features"
            parts.setdefault(name, []).append(
                tensor_parity(want[name], got[name], feed.get("attention_mask") if per_token else None, per_token)
            )
    return {name: merge_parity(figures) for name, figures in parts.items()}


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else float(np.allclose(a, b))


def mask_iou_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """[len(a), len(b)] IoU of boolean masks of one size."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    fa = np.stack([m.reshape(-1) for m in a]).astype(np.float32)
    fb = np.stack([m.reshape(-1) for m in b]).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def greedy_match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Pairs (reference, candidate), highest IoU first, each instance used once, IoU >= min_iou."""
    used_r, used_c, pairs = set(), set(), []
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < min_iou:
            break
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((int(r), int(c)))
    return pairs


def instance_agreement(references: list[dict[str, np.ndarray]], candidates: list[dict[str, np.ndarray]],
                       image_sizes: list[tuple[int, int]], threshold: float = 0.5,
                       match_iou: float = 0.5) -> dict[str, float | int | None]:
    """Heads outputs (each feed: a batch of prompts on one image) -> agreement of the instances above
    `threshold`: matched mask IoU mean, box IoU mean, score max abs error, instances lost and gained."""
    n_ref = n_cand = 0
    mask_ious, box_ious, score_errors = [], [], []
    for want, got, (height, width) in zip(references, candidates, image_sizes):
        for i in range(len(want["pred_logits"])):
            ref = postprocess({k: v[i : i + 1] for k, v in want.items()}, height, width, threshold)
            cand = postprocess({k: v[i : i + 1] for k, v in got.items()}, height, width, threshold)
            n_ref += len(ref)
            n_cand += len(cand)
            iou = mask_iou_matrix([x.mask for x in ref], [x.mask for x in cand])
            for r, c in greedy_match(iou, match_iou):
                mask_ious.append(float(iou[r, c]))
                box_ious.append(box_iou(np.array(ref[r].box), np.array(cand[c].box)))
                score_errors.append(abs(ref[r].score - cand[c].score))
    matched = len(mask_ious)
    return {
        "threshold": threshold,
        "match_iou": match_iou,
        "reference_instances": n_ref,
        "candidate_instances": n_cand,
        "matched": matched,
        "lost": n_ref - matched,
        "gained": n_cand - matched,
        "mask_iou_mean": float(np.mean(mask_ious)) if matched else None,
        "box_iou_mean": float(np.mean(box_ious)) if matched else None,
        "score_max_abs_error": float(np.max(score_errors)) if matched else None,
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
