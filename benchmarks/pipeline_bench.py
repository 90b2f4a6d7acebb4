"""Whole-pipeline figures of the phone-size models: full-size (1008 px) three-graph bundles of EfficientSAM3 EV-M,
RV-M and TV-M exported with `litetext export` (ONNX fp32 and INT8, LiteRT fp32 for EV-M), each export in its own
process under /usr/bin/time -v (peak resident memory, wall time), then ONE `litetext bench` run over all of
them with `--graphs pipeline` (1 image + 1 and + 8 prompts, split per graph, 1 thread).

Weights are RANDOM (stress initialisation, seed 0): latency and memory are real, outputs mean nothing. INT8
calibrates on the shared prompts and on the --calib-images photos; parity is measured on the --images photos.
Bundles go to --work (never into git); a bundle whose log says it was exported (exit 0) is reused.

    python benchmarks/pipeline_bench.py --work /tmp/pipeline --calib-prompts ../shared/data/prompts/calib \
        --calib-images ../shared/data/images/{astronaut.png,coffee.png,rocket.jpg} \
        --images ../shared/data/images/{camera.png,chelsea.png}
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

RESULTS = Path("benchmarks/results")
# (bundle name, preset, target, precision), smallest model first
BUNDLES = [
    ("ev-m-onnx-fp32", "efficientsam3-ev-m", "onnx", "fp32"),
    ("ev-m-onnx-int8", "efficientsam3-ev-m", "onnx", "int8"),
    ("ev-m-litert-fp32", "efficientsam3-ev-m", "litert", "fp32"),
    ("rv-m-onnx-fp32", "efficientsam3-rv-m", "onnx", "fp32"),
    ("rv-m-onnx-int8", "efficientsam3-rv-m", "onnx", "int8"),
    ("tv-m-onnx-fp32", "efficientsam3-tv-m", "onnx", "fp32"),
    ("tv-m-onnx-int8", "efficientsam3-tv-m", "onnx", "int8"),
]


def export_command(preset: str, target: str, precision: str, out: Path, args) -> list[str]:
    command = [sys.executable, "-m", "litetext.cli", "export", "--model", preset, "--random-init", "--target", target,
               "--precision", precision, "-o", str(out), "--force"]
    for image in args.images:
        command += ["--parity-images", image]
    if precision == "int8":
        command += ["--calib-prompts", args.calib_prompts]
        for image in args.calib_images:
            command += ["--calib-images", image]
    return command


def time_figures(log: str) -> dict:
    """Peak resident memory and wall time from /usr/bin/time -v's report at the end of an export log."""
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", log)
    seconds = None
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return {"peak_rss_gib": round(int(rss.group(1)) / 2**20, 2) if rss else None,
            "wall_seconds": round(seconds, 1) if seconds is not None else None}


def export(name: str, preset: str, target: str, precision: str, args) -> dict:
    out = Path(args.work) / name
    log_path = Path(args.work) / f"{name}.log"
    done = log_path.exists() and "Exit status: 0" in log_path.read_text() and (out / "manifest.json").exists()
    if not done:
        command = ["/usr/bin/time", "-v", *export_command(preset, target, precision, out, args)]
        print(" ".join(command), file=sys.stderr, flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(log_path, "w") as log:
            subprocess.run(["nice", "-n", "10", *command], stdout=log, stderr=subprocess.STDOUT, env=env)
    log = log_path.read_text()
    row = {"bundle": name, "model": preset, "target": target, "precision": precision, **time_figures(log),
           "exported": "Exit status: 0" in log}
    if not row["exported"]:
        row["error"] = [line for line in log.splitlines() if line.strip()][-30:]
        return row
    manifest = json.loads((out / "manifest.json").read_text())
    row["weights"] = manifest["model"]["weights_label"]
    row["graphs"] = {}
    for graph, entry in manifest["graphs"].items():
        outputs = entry["parity"]["outputs"]
        row["graphs"][graph] = {
            "mib": round(entry["bytes"] / 2**20, 2),
            "cosine_mean_worst_output": min(f["cosine_mean"] for f in outputs.values()),
            "cosine_worst_1pct_worst_output": min(f["cosine_worst_1pct"] for f in outputs.values()),
            "max_abs_error": max(f["max_abs_error"] for f in outputs.values()),
            "layers_kept_fp32": entry.get("calibration", {}).get("layers_kept_fp32"),
        }
    row["three_graphs_mib"] = round(sum(g["mib"] for g in row["graphs"].values()), 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/pipeline")
    parser.add_argument("--calib-prompts", required=True)
    parser.add_argument("--calib-images", nargs="+", required=True)
    parser.add_argument("--images", nargs="+", required=True, help="parity images, and the bench's image")
    parser.add_argument("--only", nargs="*", help="bundle names to export (default: all)")
    parser.add_argument("--no-bench", action="store_true", help="export only")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="timing cap per pipeline row")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    rows = [export(*b, args) for b in BUNDLES if not args.only or b[0] in args.only]
    result = {"what": "full-size (1008 px) three-graph bundles: export peak RSS and wall time (/usr/bin/time -v, "
                      "one export at a time, nice -n 10, OMP_NUM_THREADS=1), sizes and export parity per graph",
              "weights": "RANDOM (stress initialisation, seed 0)",
              "calib_prompts": args.calib_prompts, "calib_images": [Path(p).name for p in args.calib_images],
              "parity_images": [Path(p).name for p in args.images], "rows": rows}
    path = RESULTS / "pipeline_exports.json"
    if args.only and path.exists():  # a partial rerun updates its rows
        old = [r for r in json.loads(path.read_text())["rows"] if r["bundle"] not in args.only]
        result["rows"] = sorted(old + rows, key=lambda r: [b[0] for b in BUNDLES].index(r["bundle"]))
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    for r in result["rows"]:
        print(f"{r['bundle']:18s} exported={r['exported']} peak {r['peak_rss_gib']} GiB, {r['wall_seconds']} s, "
              f"{r.get('three_graphs_mib')} MiB")
    if args.no_bench:
        return 0
    bundles = [str(Path(args.work) / r["bundle"]) for r in result["rows"] if r["exported"]]
    command = [sys.executable, "-m", "litetext.cli", "bench", *bundles, "--graphs", "pipeline",
               "--pipeline-prompts", "1,8", "--threads", "1", "--warmup", "1", "--min-runs", "3", "--min-seconds", "0",
               "--max-seconds", str(args.max_seconds), "--json", str(RESULTS / "pipeline_bench.json"),
               "--report", str(RESULTS / "pipeline_bench")]
    for image in args.images[:1]:
        command += ["--images", image]
    print(" ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(["nice", "-n", "10", *command], env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


if __name__ == "__main__":
    sys.exit(main())
