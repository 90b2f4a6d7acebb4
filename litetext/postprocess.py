"""Post-processing of the heads' outputs in numpy only, as an app would port it: scores, boxes and masks of the
instances above a threshold. Prediction and the parity gate both use it, so they judge what an app sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Instance:
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    mask: np.ndarray  # bool [H, W]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Without overflow: trained mask logits reach -100 and beyond, where exp(-x) overflows float32."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(x, np.float32), copy=False)



def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of the last two axes, as torch's interpolate(mode="bilinear", align_corners=False)
    without antialiasing: sample at (i + 0.5) * in/out - 0.5, clamped at the low edge."""

    def weights(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    r0, r1, wr = weights(x.shape[-2], height)
    c0, c1, wc = weights(x.shape[-1], width)
    rows = x[..., r0, :] * (1 - wr)[:, None] + x[..., r1, :] * wr[:, None]
    return rows[..., c0] * (1 - wc) + rows[..., c1] * wc



def query_scores(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Each query's score for one image (batch 1): sigmoid(pred_logits) x sigmoid(presence_logits)."""
    return sigmoid(outputs["pred_logits"][0]) * sigmoid(outputs["presence_logits"][0, 0])



def postprocess(outputs: dict[str, np.ndarray], image_height: int, image_width: int,
                threshold: float = 0.5, mask_threshold: float = 0.5) -> list[Instance]:
    """Heads outputs for one image (batch 1) -> instances above `threshold`, best first."""
    scores = query_scores(outputs)
    keep = np.flatnonzero(scores > threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    scale = np.array([image_width, image_height, image_width, image_height], dtype=np.float32)
    boxes = outputs["pred_boxes"][0, keep] * scale
    masks = resize_bilinear(sigmoid(outputs["pred_masks"][0, keep]), image_height, image_width) > mask_threshold
    return [Instance(float(scores[i]), tuple(map(float, b)), m) for i, b, m in zip(keep, boxes, masks)]
