"""ONNX Runtime latency of the EfficientSAM3 vision encoders that benchmarks/efficientsam3_export.py wrote
(1 thread, batch 1, 1008 px), measured side by side: every session is opened and warmed up first, then the
timed runs go round-robin over the sessions, so that load from other processes falls on all of them alike.

    python benchmarks/efficientsam3_latency.py --runs 10
    # eager PyTorch instead, the ViT beside the students (vision encoder graph, random weights, 1 thread)
    python benchmarks/efficientsam3_latency.py --torch litetext-s0,efficientsam3-ev-m,efficientsam3-tv-m --runs 2 \
        --json benchmarks/results/efficientsam3_latency_torch.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from litetext.files import write_json_atomic


def time_torch(args) -> None:
    import torch

    from litetext.models.graphs import VisionEncoderGraph
    from litetext.models.loading import load_model

    torch.set_num_threads(1)
    pixels = torch.randn(1, 3, 1008, 1008, generator=torch.Generator().manual_seed(0))
    graphs = {name: VisionEncoderGraph(load_model(name, random_init=True, seed=0)).eval() for name in args.torch.split(",")}
    times: dict[str, list[float]] = {name: [] for name in graphs}
    with torch.no_grad():
        for graph in graphs.values():
            graph(pixels)  # warm-up
        for _ in range(args.runs):
            for name, graph in graphs.items():
                start = time.perf_counter()
                graph(pixels)
                times[name].append((time.perf_counter() - start) * 1000)
    results = {name: {"p50_ms": round(float(np.median(t)), 1), "min_ms": round(min(t), 1), "max_ms": round(max(t), 1),
                      "runs": len(t)} for name, t in times.items()}
    for name, r in results.items():
        print(f"{name:24s} p50 {r['p50_ms']:10.1f} ms  min {r['min_ms']:10.1f}  max {r['max_ms']:10.1f}")
    write_json_atomic(Path(args.json), {
        "what": "eager PyTorch vision encoder, fp32, 1 thread, batch 1, 1008 px, round-robin side by side",
        "weights": "random, seed 0", "machine": platform.platform(), "torch": torch.__version__,
        "results": results,
    })
    print(f"wrote {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-json", default="benchmarks/results/efficientsam3_export.json")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--torch", help="presets whose eager PyTorch vision encoders to time instead of ONNX files")
    parser.add_argument("--json", default="benchmarks/results/efficientsam3_latency.json")
    args = parser.parse_args()
    if args.torch:
        return time_torch(args)

    import onnxruntime as ort

    rows = [r for r in json.loads(Path(args.export_json).read_text())["rows"] if "onnx" in r]
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    pixels = np.random.default_rng(0).standard_normal((1, 3, 1008, 1008)).astype(np.float32)
    sessions = {}
    for row in rows:
        label = f"{row['model']} {row['precision']}"
        start = time.perf_counter()
        sessions[label] = ort.InferenceSession(row["onnx"], options, providers=["CPUExecutionProvider"])
        sessions[label].run(None, {"pixel_values": pixels})  # warm-up
        print(f"opened {label} ({time.perf_counter() - start:.1f} s with warm-up)", flush=True)
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(args.runs):
        for label, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"pixel_values": pixels})
            times[label].append((time.perf_counter() - start) * 1000)
    results = {label: {"p50_ms": round(float(np.median(t)), 1), "p90_ms": round(float(np.percentile(t, 90)), 1),
                       "min_ms": round(min(t), 1), "max_ms": round(max(t), 1), "runs": len(t)}
               for label, t in times.items()}
    for label, r in results.items():
        print(f"{label:40s} p50 {r['p50_ms']:8.1f} ms  p90 {r['p90_ms']:8.1f}  min {r['min_ms']:8.1f}")
    write_json_atomic(Path(args.json), {
        "what": "ONNX Runtime CPU latency, vision encoder, 1 thread, batch 1, 1008 px, round-robin side by side",
        "weights": "random, seed 0 (latency does not depend on them)",
        "machine": platform.platform(), "onnxruntime": ort.__version__, "results": results,
    })
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
