"""How far a runner's outputs are from a reference runner's on the same feeds.

Tensors: `tensor_parity` per output (text features per valid token; others per sample), merged over feeds.
Heads: also instance agreement, what an app sees: both outputs go through `postprocess` at a score
threshold, and instances are matched greedily by mask IoU (highest pair first, at least `match_iou`).
"""

from __future__ import annotations

import numpy as np


def output_parity(references: list[dict[str, np.ndarray]], candidates: list[dict[str, np.ndarray]],
                  feeds: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    from litetext.calibration.parity import merge_parity, tensor_parity

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
    from litetext.predict import postprocess

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


def summary(parity: dict) -> dict[str, float] | None:
    """The worst figures over a record's outputs (for tables and plots), or None without parity figures."""
    outputs = (parity or {}).get("outputs")
    if not outputs:
        return None
    return {
        "cosine_mean": min(f["cosine_mean"] for f in outputs.values()),
        "cosine_worst_1pct": min(f["cosine_worst_1pct"] for f in outputs.values()),
        "cosine_min": min(f["cosine_min"] for f in outputs.values()),
        "max_abs_error": max(f["max_abs_error"] for f in outputs.values()),
    }
