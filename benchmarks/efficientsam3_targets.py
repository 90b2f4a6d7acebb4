"""EfficientSAM3 EV-M, RV-M and TV-M vision encoders at full size (1008 px) to TensorRT (fp16, INT8 Q/DQ) and
Core ML (fp16, w8, w4, w8a8), with the export's own parity gates. Each export is `litetext export --graphs
vision_encoder` in its own process under /usr/bin/time -v (peak resident memory, wall time), one at a time,
nice -n 10, OMP_NUM_THREADS=1; then `litetext check` on each TensorRT bundle.

No GPU and no macOS here: TensorRT parity runs the bundle's ONNX graph in ONNX Runtime (what `litetext export
--target tensorrt` does without tensorrt installed), Core ML parity is simulated in PyTorch (the package's
compression applied to the PyTorch graph, computed in fp16). Weights are RANDOM (stress initialisation, seed
0): sizes, memory and parity are real, outputs mean nothing. INT8 and w8a8 calibrate on --calib-prompts and
the --calib-images photos (w4 uses them to rank layers); parity is measured on the --parity-images photos.

Bundles go to --work (never into git). The JSON is rewritten after every row, so a stopped run keeps what it
measured; a row already in the JSON, or with a finished log in --work, is not exported again unless --redo
names it (model:init:target:precision).
A failed export is a row with its error line. --inits stress,transformers adds rows on transformers' own
initialisation, which show the targets apart from how well-conditioned the random weights are
(benchmarks/conditioning.py: the stress TinyViT trunk is not).

    python benchmarks/efficientsam3_targets.py --work /tmp/targets --calib-prompts ../shared/data/prompts/calib \
        --calib-images ../shared/data/images/{astronaut.png,coffee.png,rocket.jpg} \
        --parity-images ../shared/data/images/{camera.png,chelsea.png}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_bench import export_command, run_timed, time_figures  # noqa: E402  (exports under /usr/bin/time -v)

RESULTS = Path("benchmarks/results")
MODELS = ("efficientsam3-ev-m", "efficientsam3-rv-m", "efficientsam3-tv-m")
# (target, precision, extra export options), in the order they run for each model.
ROWS = (
    ("tensorrt", "fp16", ()),
    ("tensorrt", "int8", ()),
    ("coreml", "fp16", ()),
    ("coreml", "w8", ()),
    ("coreml", "w8a8", ()),
    ("coreml", "w4", ("--deployment-target", "iOS18")),  # 4-bit per-block weights need Core ML 8; its search is the slowest
)
CALIBRATED = {("tensorrt", "int8"), ("coreml", "w4"), ("coreml", "w8a8")}


def row_key(row: dict) -> str:
    return f"{row['model']}:{row.get('init', 'stress')}:{row['target']}:{row['precision']}"


def error_line(log: str) -> str:
    """The export's one-line error (litetext prints `error: ...`), else the log's last line."""
    lines = [line for line in log.splitlines() if line.strip() and not line.startswith("\t")]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["(empty log)"])[-1]


def check_bundle(out: Path) -> dict:
    """`litetext check --json` on a TensorRT bundle: its findings and exit status."""
    done = subprocess.run([sys.executable, "-m", "litetext.cli", "check", str(out), "--json"],
                          capture_output=True, text=True)
    try:
        findings = json.loads(done.stdout)
    except json.JSONDecodeError:
        findings = (done.stdout + done.stderr).strip().splitlines()[-5:]
    return {"exit_status": done.returncode, "findings": findings}


def measure(model: str, init: str, target: str, precision: str, extra: tuple, args, redo: bool) -> dict:
    """Export one row (or read the finished log an earlier run left in --work) and describe it."""
    name = f"{model.removeprefix('efficientsam3-')}-{target}-{precision}" + ("" if init == "stress" else f"-{init}")
    out, log_path = Path(args.work) / name, Path(args.work) / f"{name}.log"
    if redo or not (log_path.exists() and "Exit status:" in log_path.read_text()):
        calibration = (args.calib_prompts, args.calib_images) if (target, precision) in CALIBRATED else None
        run_timed(export_command(model, target, precision, init, ("--graphs", "vision_encoder", *extra), out,
                                 args.parity_images, calibration), log_path)
    log = log_path.read_text()
    figures = time_figures(log)
    row = {"model": model, "init": init, "target": target, "precision": precision, "options": list(extra),
           "bundle": str(out),
           "export_seconds": figures["wall_seconds"], "peak_rss_gib": figures["peak_rss_gib"]}
    if not ("Exit status: 0" in log and (out / "manifest.json").exists()):
        return {**row, "weights": f"RANDOM weights (seed 0, {init} init), not a trained model",
                "gate_passed": False, "error": error_line(log)}
    manifest = json.loads((out / "manifest.json").read_text())
    graph = manifest["graphs"]["vision_encoder"]
    row.update({
        "weights": manifest["model"]["weights_label"],
        "file_mib": round(graph["bytes"] / 2**20, 2),
        "parity_runtime": graph.get("parity_runtime") or graph["parity"].get("runtime"),
        "parity": graph["parity"]["outputs"],
        "tolerance": graph["tolerance"][precision],
        "gate_passed": True,  # export raises (and writes nothing) when an output is outside its tolerance
    })
    calibration = graph.get("calibration") or {}
    for key in ("layers_kept_fp16", "layers_kept_8bit", "qdq_nodes", "calibration_parity"):
        if key in calibration:
            row[key] = calibration[key]
    if target == "tensorrt":
        row["litetext_check"] = check_bundle(out)
    return row


def write(path: Path, rows: list[dict], args) -> None:
    from litetext.files import write_json_atomic

    write_json_atomic(path, {
        "what": "EfficientSAM3 vision encoders at 1008 px to TensorRT (fp16, int8 Q/DQ) and Core ML (fp16, w8, w4, "
                "w8a8): size, parity against PyTorch fp32 per output, gate, export wall time and peak RSS "
                "(/usr/bin/time -v, one export at a time, nice -n 10, OMP_NUM_THREADS=1)",
        "weights": "RANDOM (seed 0): stress initialisation unless a row's init says transformers",
        "parity_runtimes": {"tensorrt": "ONNX Runtime on the bundle's ONNX graph (tensorrt is not installed here)",
                            "coreml": "simulated in PyTorch fp16 with the package's compression (no macOS here)"},
        "calib_prompts": args.calib_prompts, "calib_images": [Path(p).name for p in args.calib_images],
        "parity_images": [Path(p).name for p in args.parity_images],
        "rows": rows,
    })


def worst(row: dict, key: str) -> float:
    return min((f[key] for f in row.get("parity", {}).values()), default=float("nan"))


def print_table(rows: list[dict]) -> None:
    print(f"{'model':20s} {'init':6s} {'target':8s} {'prec':5s} {'MiB':>7s} {'cos mean':>9s} {'worst 1%':>9s} {'gate':5s} "
          f"{'export s':>8s} {'peak GiB':>8s}")
    for r in rows:
        print(f"{r['model']:20s} {r.get('init', 'stress')[:6]:6s} {r['target']:8s} {r['precision']:5s} {r.get('file_mib', float('nan')):7.2f} "
              f"{worst(r, 'cosine_mean'):9.5f} {worst(r, 'cosine_worst_1pct'):9.5f} "
              f"{'pass' if r['gate_passed'] else 'FAIL':5s} {r['export_seconds'] or float('nan'):8.1f} "
              f"{r['peak_rss_gib'] or float('nan'):8.2f}" + (f"  {r['error']}" if "error" in r else ""), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/targets")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--inits", default="stress", help="--init of each model's rows: stress, transformers")
    parser.add_argument("--rows", default=",".join(f"{t}:{p}" for t, p, _ in ROWS), help="target:precision list")
    parser.add_argument("--calib-prompts", required=True)
    parser.add_argument("--calib-images", nargs="+", required=True)
    parser.add_argument("--parity-images", nargs="+", required=True)
    parser.add_argument("--redo", nargs="*", default=[], help="model:init:target:precision rows to export again")
    parser.add_argument("--json", default=str(RESULTS / "efficientsam3_targets.json"))
    parser.add_argument("--reread", action="store_true", help="describe the JSON's rows again from their logs, no export")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    path = Path(args.json)
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    if args.reread:
        extras = {(t, p): e for t, p, e in ROWS}
        rows = [measure(r["model"], r.get("init", "stress"), r["target"], r["precision"],
                        extras[(r["target"], r["precision"])], args, False) for r in rows]
        write(path, rows, args)
        print_table(rows)
        return 0
    chosen = set(args.rows.split(","))
    for model in args.models.split(","):
        for init in args.inits.split(","):
            for target, precision, extra in ROWS:
                key = row_key({"model": model, "init": init, "target": target, "precision": precision})
                done = [r for r in rows if row_key(r) == key]
                if f"{target}:{precision}" not in chosen or (done and key not in args.redo):
                    continue
                row = measure(model, init, target, precision, extra, args, key in args.redo)
                rows = [r for r in rows if row_key(r) != key] + [row]
                write(path, rows, args)
                print_table([row])
    print_table(rows)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
