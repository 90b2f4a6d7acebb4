"""EfficientSAM3 EV-M, RV-M and TV-M at full size (1008 px): the vision_encoder graph to ONNX fp32 and INT8
(calibrated on real photos, parity on other photos), one model at a time, each in its own process so that
its peak resident memory is its own; then ONNX Runtime latency of each vision encoder (1 thread, batch 1,
1008 px) side by side with LiteText's ViT vision encoder when --vit-onnx names one.

Weights are RANDOM (seed 0): no checkpoint can be downloaded here. The heads and text encoder graphs are
LiteText-S0's, unchanged; their full-size INT8 sizes come from benchmarks/results/int8_heads.json and
int8_text_encoder.json (same architectures) and are added up with the vision encoder for the whole bundle.

    python benchmarks/efficientsam3_export.py --calib-images ../shared/data/images/astronaut.png \
        ../shared/data/images/coffee.png --images ../shared/data/images/camera.png ../shared/data/images/chelsea.png
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("efficientsam3-ev-m", "efficientsam3-rv-m", "efficientsam3-tv-m")
RESULTS = Path("benchmarks/results")


def export_one(model: str, precision: str, work: Path, calib_images: list[str], images: list[str]) -> dict:
    """Runs in a child process: export one vision encoder at one precision, report what it measured.
    Precision "int8+convtranspose" was the experiment that made litetext's INT8 quantize the neck's
    ConvTranspose weights too (now in litetext.calibration.int8.QUANTIZED_OPS, so it equals "int8");
    "int8-fp32-convtranspose" is INT8 as it was before, ConvTranspose kept fp32."""
    from litetext.export import export_bundle
    from litetext.models.loading import load_model

    label = precision
    if precision in ("int8+convtranspose", "int8-fp32-convtranspose"):
        import litetext.calibration.int8 as int8

        if precision == "int8-fp32-convtranspose":
            int8.QUANTIZED_OPS.remove("ConvTranspose")
        precision = "int8"

    loaded = load_model(model, random_init=True, seed=0)
    start = time.perf_counter()
    m = export_bundle(loaded, work / f"{model}-{label}", graphs=["vision_encoder"], precision=precision,
                      calib_images=calib_images if precision == "int8" else None, parity_images=images, force=True)
    graph = m["graphs"]["vision_encoder"]
    return {
        "model": model, "precision": label, "weights": loaded.weights_label,
        "image_encoder": m["model"]["image_encoder"],
        "params_millions": round(sum(p.numel() for p in loaded.model.vision_encoder.parameters()) / 1e6, 2),
        "file_mib": round(graph["bytes"] / 2**20, 2),
        "parity": graph["parity"]["outputs"],
        "kept_fp32": graph.get("calibration", {}).get("kept_fp32"),
        "export_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "onnx": str(work / f"{model}-{label}" / "vision_encoder.onnx"),
    }


def torch_latency(model: str, runs: int) -> dict:
    """Runs in a child process: eager PyTorch vision encoder (fp32, 1 thread, batch 1, 1008 px)."""
    import torch

    from litetext.models.graphs import VisionEncoderGraph
    from litetext.models.loading import load_model

    torch.set_num_threads(1)
    graph = VisionEncoderGraph(load_model(model, random_init=True, seed=0)).eval()
    pixels = torch.randn(1, 3, 1008, 1008, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        graph(pixels)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            graph(pixels)
            times.append((time.perf_counter() - start) * 1000)
    return {"model": model, "p50_ms": round(float(np.median(times)), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1), "runs": runs,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def latency_ms(onnx_path: str, runs: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((1, 3, 1008, 1008)).astype(np.float32)
    session.run(None, {"pixel_values": pixels})  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"pixel_values": pixels})
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(float(np.median(times)), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1), "runs": runs}


def int8_bundle_sizes(rows: list[dict]) -> dict:
    """Whole INT8 bundle (text + vision + heads, MiB) per model: this run's vision encoder plus LiteText-S0's
    full-size INT8 text encoder (minmax) and heads as committed in benchmarks/results (same graphs)."""
    heads_file, text_file = RESULTS / "int8_heads.json", RESULTS / "int8_text_encoder.json"
    if not (heads_file.is_file() and text_file.is_file()):
        return {}
    heads = json.loads(heads_file.read_text())["bytes"] / 2**20
    text = next(r for r in json.loads(text_file.read_text())["rows"] if r["method"] == "minmax")["bytes"] / 2**20
    return {
        f"{row['model']} {row['precision']}": {"vision_mib": row["file_mib"], "text_mib": round(text, 2), "heads_mib": round(heads, 2),
                       "total_mib": round(row["file_mib"] + text + heads, 2),
                       "text_and_heads_from": [str(text_file), str(heads_file)]}
        for row in rows if row.get("precision", "").startswith("int8") and "file_mib" in row
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--calib-images", nargs="+", required=True)
    parser.add_argument("--images", nargs="+", required=True, help="held-out photos for parity")
    parser.add_argument("--work", default="benchmarks/work/efficientsam3")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per vision encoder")
    parser.add_argument("--vit-onnx", help="a LiteText vision_encoder.onnx (fp32, 1008 px) to time beside them")
    parser.add_argument("--torch-latency", default="",
                        help="presets whose eager PyTorch vision encoder to time (1 thread), e.g. litetext-s0,efficientsam3-ev-m")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=str(RESULTS / "efficientsam3_export.json"))
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    if args.child:
        print("RESULT " + json.dumps(export_one(*args.child, work, args.calib_images, args.images)))
        return
    if args.torch_child:
        print("RESULT " + json.dumps(torch_latency(args.torch_child, max(1, args.runs // 2))))
        return

    def child(extra: list[str]) -> dict | str:
        cmd = [sys.executable, __file__, *extra, "--work", str(work), "--runs", str(args.runs),
               "--calib-images", *args.calib_images, "--images", *args.images]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            return (done.stderr.strip().splitlines() or ["?"])[-1]
        return json.loads(lines[-1][len("RESULT "):])

    rows = []
    for model in args.models.split(","):
        for precision in args.precisions.split(","):
            row = child(["--child", model, precision])
            if isinstance(row, str):
                row = {"model": model, "precision": precision, "failed": row}
            else:
                row["latency_1_thread"] = latency_ms(row["onnx"], args.runs)
            rows.append(row)
            worst = min((f["cosine_min"] for f in row.get("parity", {}).values()), default=float("nan"))
            print(f"{model:20s} {precision:5s} {row.get('file_mib', float('nan')):8.2f} MiB  worst cosine "
                  f"{worst:.5f}  peak RSS {row.get('peak_rss_mib', float('nan')):7.0f} MiB  "
                  f"p50 {row.get('latency_1_thread', {}).get('p50_ms', float('nan'))} ms  {row.get('failed', '')}",
                  flush=True)
    vit = None
    if args.vit_onnx:
        vit = {"onnx": args.vit_onnx, "latency_1_thread": latency_ms(args.vit_onnx, max(2, args.runs // 2))}
        print(f"LiteText ViT vision encoder fp32: p50 {vit['latency_1_thread']['p50_ms']} ms")
    torch_rows = []
    for model in filter(None, args.torch_latency.split(",")):
        row = child(["--torch-child", model])
        torch_rows.append(row if isinstance(row, dict) else {"model": model, "failed": row})
        print(f"eager torch {model:20s} p50 {torch_rows[-1].get('p50_ms')} ms  {torch_rows[-1].get('failed', '')}", flush=True)
    out = {
        "what": "EfficientSAM3 vision encoders at 1008 px: ONNX fp32 / INT8 export, parity, peak RSS, ORT latency",
        "weights": "random, seed 0",
        "calib_images": args.calib_images, "parity_images": args.images,
        "machine": platform.platform(), "processor": platform.processor(),
        "rows": rows, "vit": vit, "torch_latency_1_thread": torch_rows, "int8_bundles": int8_bundle_sizes(rows),
    }
    from litetext.files import write_json_atomic

    write_json_atomic(Path(args.json), out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
