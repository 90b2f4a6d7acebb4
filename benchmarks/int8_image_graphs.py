"""INT8 vision encoder or heads at full size (1008 px) on real images: tensor parity and what an app would see,
against fp32.

Calibrates on prompts from the calibration split and on --calib-images; measures on other images (--images)
with the built-in COCO names. Weights are RANDOM (seed 0) unless --checkpoint is given: random heads score
every query far below 0.5, so the export's instance agreement at 0.5 is vacuous for them (zero instances on both
sides). The tensor figures still say how faithfully the INT8 graph computes the same function, and the
top-query agreement compares what an app would see for the k best-scoring queries of the fp32 pipeline, which
exist whatever the weights: for those queries, the INT8 score error, box IoU and mask IoU (masks at logit 0),
and how many of them are also among INT8's k best. For the vision encoder the INT8 graph's features go through
the fp32 PyTorch heads, so the figures are those of the image path as a whole.

Also records the process's peak resident memory (the heads' export once ran out of memory on 24 GiB: see
litetext/calibration/int8.py, _priority_ordered_session).

    python benchmarks/int8_image_graphs.py --graph heads --calib-prompts ../shared/data/prompts/calib \
        --calib-images ../shared/data/images/astronaut.png ../shared/data/images/coffee.png \
        --images ../shared/data/images/camera.png ../shared/data/images/chelsea.png
    python benchmarks/int8_image_graphs.py --graph vision_encoder ...   # the same data
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
from pathlib import Path

import numpy as np

from litetext.calibration.data import builtin_prompts, load_rgb, preprocess_image, read_prompts
from litetext.calibration.parity import box_iou, mask_iou_matrix
from litetext.errors import LitetextError
from litetext.postprocess import query_scores
from litetext.export import export_bundle
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic

from benchmark_args import load_benchmark_model, model_arguments


def top_query_agreement(loaded, bundle_path: Path, graph: str, images: list[str], prompts: list[str],
                        k: int = 10) -> dict:
    """For each image x prompt (batch 1): the k best queries of the fp32 PyTorch pipeline, compared with the
    pipeline where the bundle's INT8 `graph` replaces its PyTorch one, on the same queries."""
    from litetext.bundle import Bundle
    from litetext.models.graphs import build_graph, describe_graphs, model_geometry
    from litetext.runtimes.torch_runner import TorchRunner
    from litetext.tokenizer import ClipTokenizer

    bundle = Bundle.open(bundle_path)
    ctx, padding = bundle.context_length, bundle.text_padding
    specs = describe_graphs(loaded, ctx, padding)
    torch_runner = lambda name: TorchRunner(build_graph(name, loaded, ctx, padding), specs[name])  # noqa: E731
    text, vision, reference = torch_runner("text_encoder"), torch_runner("vision_encoder"), torch_runner("heads")
    candidate = bundle.runner(graph)
    tokens = ClipTokenizer()(prompts, context_length=ctx, pad_id=padding.pad_id)
    features = text.infer({"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask})["text_features"]
    size = model_geometry(loaded).image_size
    score_err, box_ious, mask_ious, overlap, best = [], [], [], [], 0.0
    for image in images:
        rgb = load_rgb(image)
        height, width = rgb.shape[:2]
        scale = np.array([width, height, width, height], dtype=np.float32)
        pixels = {"pixel_values": preprocess_image(rgb, size)}
        levels = vision.infer(pixels)
        int8_levels = candidate.infer(pixels) if graph == "vision_encoder" else None
        for i in range(len(prompts)):
            text_feed = {"text_features": features[i : i + 1], "attention_mask": tokens.attention_mask[i : i + 1]}
            want = reference.infer({**levels, **text_feed})
            if graph == "vision_encoder":
                got = reference.infer({**int8_levels, **text_feed})
            else:
                got = candidate.infer({**levels, **text_feed})
            scores = [query_scores(want), query_scores(got)]
            top = np.argsort(-scores[0], kind="stable")[:k]
            best = max(best, float(scores[0][top[0]]))
            overlap.append(len(set(top) & set(np.argsort(-scores[1], kind="stable")[:k])) / k)
            for q in top:
                score_err.append(abs(scores[0][q] - scores[1][q]))
                box_ious.append(box_iou(want["pred_boxes"][0, q] * scale, got["pred_boxes"][0, q] * scale))
                masks = [[o["pred_masks"][0, q] > 0] for o in (want, got)]
                mask_ious.append(float(mask_iou_matrix(*masks)[0, 0]))
    candidate.close()
    return {
        "k": k, "samples": len(images) * len(prompts), "queries": len(score_err),
        "top_k_overlap_mean": float(np.mean(overlap)),
        "score_abs_error_mean": float(np.mean(score_err)), "score_abs_error_max": float(np.max(score_err)),
        "box_iou_mean": float(np.mean(box_ious)), "box_iou_min": float(np.min(box_ious)),
        "mask_iou_mean": float(np.mean(mask_ious)), "mask_iou_min": float(np.min(mask_ious)),
        "reference_score_max": float(best),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", choices=["heads", "vision_encoder"], required=True)
    parser.add_argument("--calib-prompts", nargs="+", required=True)
    parser.add_argument("--calib-images", nargs="+", required=True)
    parser.add_argument("--images", nargs="+", required=True, help="images to measure on (not calibrated on)")
    model_arguments(parser)
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--json", help="default: benchmarks/results/int8_GRAPH.json")
    args = parser.parse_args()

    loaded = load_benchmark_model(args)
    out = Path(args.work) / f"int8-{args.graph}"
    path = Path(args.json or f"benchmarks/results/int8_{args.graph}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    about = {"machine": platform.platform(), "tools": tool_versions(), "command": "python " + " ".join(sys.argv)}
    try:
        manifest = export_bundle(
            loaded, out, graphs=[args.graph], precision="int8",
            calib_prompts=read_prompts(args.calib_prompts), calib_images=args.calib_images,
            parity_images=args.images, force=True, progress=lambda m: print("  ", m, flush=True),
        )
    except LitetextError as e:  # the gate failed even after the mixed-precision search: the record says so
        write_json_atomic(path, {"benchmark": f"int8_{args.graph}", "model": args.model, "weights": loaded.weights_label,
                                 "status": "failed", "error": str(e),
                                 "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                                 **about})
        print(f"FAILED: {e}\nwrote {path}")
        sys.exit(1)
    graph = manifest["graphs"][args.graph]
    print("   top-query agreement on", len(args.images), "images x 8 COCO names", flush=True)
    queries = top_query_agreement(loaded, out, args.graph, args.images, builtin_prompts()[:8])
    result = {
        "benchmark": f"int8_{args.graph}", "model": args.model, "weights": loaded.weights_label, "status": "ok",
        "bytes": graph["bytes"], "parity": graph["parity"], "top_queries": queries,
        "calibration": graph["calibration"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **about,
    }
    write_json_atomic(path, result)
    for name, fig in graph["parity"]["outputs"].items():
        print(f"{name:16s} cos mean {fig['cosine_mean']:.5f}  worst 1% {fig['cosine_worst_1pct']:.5f}  "
              f"max err {fig['max_abs_error']:.3g} (ref max {fig['max_abs_reference']:.3g})")
    if "instances" in graph["parity"]:
        print("instances:", graph["parity"]["instances"])
    print("top queries:", queries)
    print(f"{graph['bytes'] / 2**20:.1f} MiB; kept fp32: {graph['calibration']['layers_kept_fp32_activations']}; wrote {path}")


if __name__ == "__main__":
    main()
