"""Stress initialisation at full width and depth: the largest activation of every graph and the spread of the
heads' scores, against transformers' initialisation.

The text encoders run at full size. The vision encoder (ViT-L, 32 layers) and the heads (6 + 6 DETR layers, 200
queries) run at full width and depth on 336 px images (a 24 x 24 grid, one attention window) instead of 1008 px:
1008 px takes >10 GiB on this machine. Activations grow with depth and width, which are the full ones here;
resolution changes how many tokens attend, not the scale of each.

    python benchmarks/stress_activations.py --model litetext-s0 --prompts ../shared/data/prompts/eval
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from litetext.calibration.data import builtin_images, load_rgb, preprocess_image, read_prompts, seeded_sample
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.models.graphs import build_graph, get_padding
from litetext.models.loading import load_model
from litetext.tokenizer import ClipTokenizer

IMAGE_SIZE = 336
FP16_MAX = float(np.finfo(np.float16).max)


def reduced_resolution(size: int) -> dict:
    grid = size // 14
    # everything else keeps transformers' SAM3 defaults: the full-size ViT-L and neck
    return {"vision_config": {"model_type": "sam3_vision_model",
                              "backbone_config": {"model_type": "sam3_vit_model", "image_size": size},
                              "backbone_feature_sizes": [[grid * 4] * 2, [grid * 2] * 2, [grid] * 2]}}


def peak_activation(module, *inputs):
    peak = {"max_abs": 0.0, "finite": True, "where": ""}

    def hook(mod, _, output):
        for t in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                peak["finite"] &= bool(torch.isfinite(t).all())
                value = float(t.abs().max())
                if value > peak["max_abs"]:
                    peak.update(max_abs=value, where=type(mod).__name__)

    hooks = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        out = module(*inputs)
    for h in hooks:
        h.remove()
    return out, peak


def measure(preset: str, init: str, prompts: list[str]) -> dict:
    loaded = load_model(preset, random_init=True, seed=0, init=init, config_overrides=reduced_resolution(IMAGE_SIZE))
    ctx = loaded.model.config.text_config.max_position_embeddings if loaded.family == "litetext" else 32
    padding = get_padding("transformers")
    tokens = ClipTokenizer()(prompts, context_length=ctx, pad_id=padding.pad_id)
    ids, mask = torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)
    pixels = torch.from_numpy(np.concatenate([preprocess_image(load_rgb(p), IMAGE_SIZE) for p in builtin_images()]))
    text, text_peak = peak_activation(build_graph("text_encoder", loaded, ctx, padding), ids, mask)
    levels, vision_peak = peak_activation(build_graph("vision_encoder", loaded, ctx, padding), pixels)
    pick = [(i, p) for i in range(len(pixels)) for p in range(4)]  # each photo with 4 prompts
    (logits, _, _, presence), heads_peak = peak_activation(
        build_graph("heads", loaded, ctx, padding), *[lv[[i for i, _ in pick]] for lv in levels],
        text[[p for _, p in pick]], mask[[p for _, p in pick]])
    scores = torch.sigmoid(logits) * torch.sigmoid(presence)
    row = {"model": preset, "init": init, "weights": loaded.weights_label,
           "max_abs_activation": {"text_encoder": text_peak, "vision_encoder": vision_peak, "heads": heads_peak},
           "scores": {"std_across_queries_mean": float(scores.std(dim=1).mean()), "min": float(scores.min()),
                      "max": float(scores.max()), "above_0.5": int((scores > 0.5).sum()),
                      "queries": int(scores.numel())}}
    del loaded
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["litetext-s0"])
    parser.add_argument("--prompts", nargs="+", required=True, help="prompt files or folders (16 drawn, seeded)")
    parser.add_argument("--json", default="benchmarks/results/stress_activations.json")
    args = parser.parse_args()
    prompts = seeded_sample(read_prompts(args.prompts), 16)
    rows = []
    for preset in args.model:
        for init in ("stress", "transformers"):
            row = measure(preset, init, prompts)
            rows.append(row)
            peaks = {g: round(p["max_abs"], 1) for g, p in row["max_abs_activation"].items()}
            print(f"{preset:12s} {init:12s} max |activation| {peaks}  score std across queries "
                  f"{row['scores']['std_across_queries_mean']:.4f} ({row['scores']['min']:.3f} .. "
                  f"{row['scores']['max']:.3f}, {row['scores']['above_0.5']} of {row['scores']['queries']} above 0.5)",
                  flush=True)
    write_json_atomic(args.json, {
        "benchmark": "stress_activations", "image_size": IMAGE_SIZE, "fp16_max": FP16_MAX, "rows": rows,
        "prompts": len(prompts), "images": [p.name for p in builtin_images()], "machine": platform.platform(),
        "tools": tool_versions(),
        "command": "python benchmarks/stress_activations.py --model " + " ".join(args.model)
                   + " --prompts " + " ".join(args.prompts),
    })


if __name__ == "__main__":
    main()
