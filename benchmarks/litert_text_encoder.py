"""LiteRT text encoder against ONNX, full-size architecture, side by side in one run.

Exports the text encoder as ONNX fp32 and int8 and as LiteRT fp32, fp16 and int8 (ids in, and embeddings in with
the table shipped beside the graph), INT8 calibrated on the calibration split, every artifact measured against
PyTorch on the same 1,000 held-out prompts (seeded sample), then times each in its own runtime on one thread.
The INT8 exports run with the gate off so their figures are recorded either way; `passes_default_gate` says
whether the export gate (cosine mean 0.995, worst 1% 0.98) would have passed. Weights are RANDOM (seed 0)
unless --checkpoint is given. LiteRT int8 quantizes the weighted ops (default `int8_ops="matmul"`, as the ONNX
target does) or every op (`"all"`, what an NPU runs whole).

The LiteRT exports need litert-torch, which lives in its own environment (toolchains.md):

    python benchmarks/litert_text_encoder.py --calib ../shared/data/prompts/calib --eval ../shared/data/prompts/eval
"""

from __future__ import annotations

import argparse
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from litetext.calibration.data import read_prompts, seeded_sample
from litetext.export import export_bundle
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.models.graphs import describe_graphs, get_padding
from litetext.tokenizer import ClipTokenizer

from benchmark_args import load_benchmark_model, prompt_arguments

ROWS = [  # (name, target, precision, target options)
    ("onnx fp32", "onnx", "fp32", None),
    ("onnx int8", "onnx", "int8", None),
    ("litert fp32 ids", "litert", "fp32", {"text_input": "ids"}),
    ("litert fp16 ids", "litert", "fp16", {"text_input": "ids"}),
    ("litert int8 ids", "litert", "int8", {"text_input": "ids"}),
    ("litert int8-all ids", "litert", "int8", {"text_input": "ids", "int8_ops": "all"}),
    ("litert fp32 embeddings", "litert", "fp32", {"text_input": "embeddings"}),
    ("litert int8 embeddings", "litert", "int8", {"text_input": "embeddings"}),
    ("litert int8-all embeddings", "litert", "int8", {"text_input": "embeddings", "int8_ops": "all"}),
]
OFF = {"min_cosine_mean": 0.0, "min_cosine_worst_1pct": 0.0}


def latency_ms(runner, feed, repeats: int) -> float:
    runner.infer(feed)  # warm-up: allocation, XNNPACK packing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.infer(feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def open_runner(target: str, path: Path, spec):
    if target == "onnx":
        from litetext.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, spec, threads=1)
    from litetext.runtimes.litert_runner import LiteRTRunner

    return LiteRTRunner(path, spec, threads=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prompt_arguments(parser)
    parser.add_argument("--work", default="benchmarks/work/litert")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default="benchmarks/results/litert_text_encoder.json")
    args = parser.parse_args()

    loaded = load_benchmark_model(args)
    calib = read_prompts(args.calib)
    held_out = seeded_sample(read_prompts(args.eval), args.eval_count)
    padding = get_padding("upstream")
    ctx = 16
    spec = describe_graphs(loaded, ctx, padding)["text_encoder"]
    ids = ClipTokenizer()(held_out[:8], context_length=ctx, pad_id=padding.pad_id).input_ids
    rows = []
    for name, target, precision, options in ROWS:
        print(f"== {name}", flush=True)
        out = Path(args.work) / name.replace(" ", "-")
        m = export_bundle(loaded, out, target=target, graphs=["text_encoder"], precision=precision,
                          context_length=ctx, parity_prompts=held_out, calib_prompts=calib, force=True,
                          gate=OFF if precision == "int8" else None, target_options=options,
                          progress=lambda message: print("  ", message, flush=True))
        g = m["graphs"]["text_encoder"]
        fig = g["parity"]["outputs"]["text_features"]
        runner = open_runner(target, out / g["file"], spec)
        row = {
            "name": name, "target": target, "precision": precision, "options": options, "bytes": g["bytes"],
            "files": sorted(p.name for p in out.iterdir() if p.name.startswith("text_encoder")),
            "held_out_parity": fig,
            "passes_default_gate": fig["cosine_mean"] >= 0.995 and fig["cosine_worst_1pct"] >= 0.98,
            "latency_ms_batch1": latency_ms(runner, {"input_ids": ids[:1]}, args.repeats),
            "latency_ms_batch8": latency_ms(runner, {"input_ids": ids}, max(args.repeats // 3, 5)),
            "export_seconds": g["export_seconds"],
        }
        runner.close()
        if "litert" in g:
            row["litert"] = g["litert"]
        if "calibration" in g:
            row["calibration"] = g["calibration"]
        rows.append(row)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        fp32 = by_name[f"{r['target']} fp32" + (" " + r["options"]["text_input"] if r["options"] else "")]
        r["size_vs_fp32"] = r["bytes"] / fp32["bytes"]
    tools = tool_versions()
    for package in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"):
        try:
            tools[package] = version(package)
        except PackageNotFoundError:
            pass
    result = {
        "benchmark": "litert_text_encoder", "model": args.model, "weights": loaded.weights_label,
        "context_length": ctx, "text_padding": padding.name, "calibration_prompts_available": len(calib),
        "held_out_prompts": len(held_out), "latency": "median ms, one thread, batch 1 and 8, this machine's CPU",
        "machine": platform.platform(), "tools": tools, "rows": rows,
        "command": "python benchmarks/litert_text_encoder.py --calib " + " ".join(args.calib)
                   + " --eval " + " ".join(args.eval),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)
    print(f"\n{'artifact':24s} {'MiB':>7s} {'x fp32':>7s} {'cos mean':>9s} {'worst 1%':>9s} {'min':>9s} "
          f"{'ms b1':>7s} {'ms b8':>7s} {'XNNPACK left':>12s}")
    for r in rows:
        p = r["held_out_parity"]
        left = r.get("litert", {}).get("delegates", {}).get("xnnpack", {}).get("not_delegated", "")
        print(f"{r['name']:24s} {r['bytes'] / 2**20:7.1f} {r['size_vs_fp32']:7.3f} {p['cosine_mean']:9.5f} "
              f"{p['cosine_worst_1pct']:9.5f} {p['cosine_min']:9.5f} {r['latency_ms_batch1']:7.2f} "
              f"{r['latency_ms_batch8']:7.2f} {left!s:>12s}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
