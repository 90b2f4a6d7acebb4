"""What upstream's empty-prompt geometry token changes in the full-size heads (1008 px), eager PyTorch only.

The same FPN features and text features go through the heads twice: the transformers way (text tokens only)
and the upstream way (the geometry encoder's token for the empty prompt appended; litetext.models.heads_semantics).
Both get the same attention mask (upstream's, id != 0), so the difference is the token alone. Reported per prompt
and pooled: the change in pred_logits (max, mean, and how constant the shift is), presence logits, scores, mask
logits, and what an app sees of the 10 best-scoring queries (upstream's): how many stay in the top 10, score change,
box IoU and mask IoU (masks at logit 0). Separately, for prompts whose ids hold a 0 inside ("!"), the change from
upstream's id != 0 mask against the tokenizer's mask (both with the token).

Weights are RANDOM (seed 0) unless --checkpoint is given: what the token does to trained detections cannot be
measured here. Memory stays near 5 GiB (the ViT-L vision encoder runs once; heads at batch 1).

    python benchmarks/heads_geometry_token.py --image ../shared/data/images/chelsea.png
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from litetext.calibration.data import load_rgb, preprocess_image
from litetext.calibration.parity import box_iou, mask_iou_matrix
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.models.graphs import build_graph, get_padding, model_geometry
from litetext.models.heads_semantics import get_heads_semantics, heads_attention_mask
from litetext.postprocess import query_scores
from litetext.tokenizer import ClipTokenizer

from benchmark_args import load_benchmark_model, model_arguments

PROMPTS = ["cat", "a striped cat lying on a red blanket", "dog", "a cat!;)", "the person's left hand",
           "yellow school bus"]
OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks", "presence_logits")


def _run(graph, levels, text, mask) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = graph(*levels, torch.from_numpy(text), torch.from_numpy(mask))
    return {name: t.numpy() for name, t in zip(OUTPUTS, out)}


def compare(want: dict, got: dict, image_size: tuple[int, int], k: int) -> dict:
    """`got` against `want` (batch 1): tensor changes and the k best queries of `want`."""
    d_logits = got["pred_logits"][0] - want["pred_logits"][0]
    d_masks = np.abs(got["pred_masks"][0] - want["pred_masks"][0])
    scores = [query_scores(want), query_scores(got)]
    top = np.argsort(-scores[0], kind="stable")[:k]
    height, width = image_size
    scale = np.array([width, height, width, height], dtype=np.float32)
    box_ious = [box_iou(want["pred_boxes"][0, q] * scale, got["pred_boxes"][0, q] * scale) for q in top]
    mask_ious = [float(mask_iou_matrix([want["pred_masks"][0, q] > 0], [got["pred_masks"][0, q] > 0])[0, 0])
                 for q in top]
    return {
        "pred_logits": {"max_abs_change": float(np.abs(d_logits).max()),
                        "mean_abs_change": float(np.abs(d_logits).mean()), "mean_change": float(d_logits.mean()),
                        "std_change": float(d_logits.std()),
                        "reference_max_abs": float(np.abs(want["pred_logits"]).max())},
        "presence_logits_change": float(got["presence_logits"][0, 0] - want["presence_logits"][0, 0]),
        "score_max_abs_change": float(np.abs(scores[1] - scores[0]).max()),
        "pred_masks": {"max_abs_change": float(d_masks.max()), "mean_abs_change": float(d_masks.mean()),
                       "reference_max_abs": float(np.abs(want["pred_masks"]).max())},
        "pred_boxes_max_abs_change": float(np.abs(got["pred_boxes"] - want["pred_boxes"]).max()),
        "top_queries": {
            "k": k, "kept_in_top_k": len(set(top) & set(np.argsort(-scores[1], kind="stable")[:k])),
            "score_abs_change_max": float(np.abs(scores[1][top] - scores[0][top]).max()),
            "box_iou_min": float(min(box_ious)), "mask_iou_mean": float(np.mean(mask_ious)),
            "mask_iou_min": float(min(mask_ious)), "reference_best_score": float(scores[0][top[0]]),
        },
    }


def pooled(per_prompt: list[dict]) -> dict:
    get = lambda *path: [_dig(p, path) for p in per_prompt]  # noqa: E731
    return {
        "pred_logits_max_abs_change": max(get("pred_logits", "max_abs_change")),
        "pred_logits_mean_abs_change": float(np.mean(get("pred_logits", "mean_abs_change"))),
        "pred_logits_std_of_change_max": max(get("pred_logits", "std_change")),
        "pred_logits_reference_max_abs": max(get("pred_logits", "reference_max_abs")),
        "presence_logits_max_abs_change": float(np.max(np.abs(get("presence_logits_change")))),
        "score_max_abs_change": max(get("score_max_abs_change")),
        "pred_masks_max_abs_change": max(get("pred_masks", "max_abs_change")),
        "pred_masks_mean_abs_change": float(np.mean(get("pred_masks", "mean_abs_change"))),
        "top10_kept_mean": float(np.mean(get("top_queries", "kept_in_top_k"))),
        "top10_kept_min": int(min(get("top_queries", "kept_in_top_k"))),
        "top10_box_iou_min": min(get("top_queries", "box_iou_min")),
        "top10_mask_iou_mean": float(np.mean(get("top_queries", "mask_iou_mean"))),
        "top10_mask_iou_min": min(get("top_queries", "mask_iou_min")),
    }


def _dig(record: dict, path: tuple[str, ...]):
    for key in path:
        record = record[key]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True)
    parser.add_argument("--prompts", nargs="+", default=PROMPTS)
    parser.add_argument("--context-length", type=int, default=16)
    parser.add_argument("--json", default="benchmarks/results/heads_geometry_token.json")
    model_arguments(parser)
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load_benchmark_model(args)
    ctx, padding = args.context_length, get_padding("upstream")
    heads = {name: build_graph("heads", dataclasses.replace(loaded, heads_semantics=name), ctx, padding)
             for name in ("transformers", "upstream")}
    rgb = load_rgb(args.image)
    pixels = torch.from_numpy(preprocess_image(rgb, model_geometry(loaded).image_size))
    with torch.no_grad():
        levels = build_graph("vision_encoder", loaded, ctx, padding)(pixels)
        loaded.model.vision_encoder.backbone = None  # the ViT is done with: free its 1.2 GiB
        tokens = ClipTokenizer()(args.prompts, ctx, padding.pad_id)
        text = build_graph("text_encoder", loaded, ctx, padding)(torch.from_numpy(tokens.input_ids)).numpy()
    upstream_mask = heads_attention_mask(tokens.input_ids, tokens.attention_mask, get_heads_semantics("upstream"))

    per_prompt, id_zero = [], []
    for i, prompt in enumerate(args.prompts):
        feed = (text[i : i + 1], upstream_mask[i : i + 1])
        want = _run(heads["transformers"], levels, *feed)
        got = _run(heads["upstream"], levels, *feed)
        per_prompt.append({"prompt": prompt, **compare(want, got, rgb.shape[:2], k=10)})
        if (upstream_mask[i] != tokens.attention_mask[i]).any():  # a 0 id inside the prompt
            by_tokenizer = _run(heads["upstream"], levels, text[i : i + 1], tokens.attention_mask[i : i + 1])
            id_zero.append({"prompt": prompt, "ids": tokens.input_ids[i].tolist(),
                            **compare(by_tokenizer, got, rgb.shape[:2], k=10)})
        print(f"  {prompt!r}: done", flush=True)

    result = {
        "benchmark": "heads_geometry_token", "model": args.model, "weights": loaded.weights_label,
        "image": Path(args.image).name, "image_size": model_geometry(loaded).image_size, "context_length": ctx,
        "text_padding": "upstream", "prompts": args.prompts,
        "compared": "heads with upstream's empty-prompt geometry token vs without (transformers), same inputs "
                    "and the same id != 0 mask",
        "pooled": pooled(per_prompt), "per_prompt": per_prompt,
        "id_zero_mask": {"compared": "upstream heads with the id != 0 mask vs the tokenizer's mask",
                         "prompts": id_zero},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.platform(), "tools": tool_versions(), "command": "python " + " ".join(sys.argv),
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    print(f"\n{'prompt':40s} {'logits max':>10s} {'shift':>9s} {'std':>8s} {'masks max':>9s} "
          f"{'top10 kept':>10s} {'mask IoU min':>12s}")
    for p in per_prompt:
        lg = p["pred_logits"]
        print(f"{p['prompt'][:40]:40s} {lg['max_abs_change']:10.2e} {lg['mean_change']:9.2e} "
              f"{lg['std_change']:8.1e} {p['pred_masks']['max_abs_change']:9.2e} "
              f"{p['top_queries']['kept_in_top_k']:10d} {p['top_queries']['mask_iou_min']:12.4f}")
    print("pooled:", result["pooled"])
    for p in id_zero:
        print(f"id-0 mask, {p['prompt']!r}: logits max change {p['pred_logits']['max_abs_change']:.2e}, "
              f"masks {p['pred_masks']['max_abs_change']:.2e}")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB, {result['seconds']:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
