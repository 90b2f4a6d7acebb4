"""INT8 text encoder on held-out prompts: each calibration method against fp32, full-size architecture.

Calibrates on the calibration split only; measures on 1,000 held-out prompts (seeded sample). Weights are
RANDOM (seed 0) unless --checkpoint is given: random weights are not trained weights, so these figures say how
faithfully the quantized graph computes the same function, not how a trained student's features behave.

    python benchmarks/int8_text_encoder.py --calib ../shared/data/prompts/calib --eval ../shared/data/prompts/eval
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path


from litetext.calibration.data import read_prompts, seeded_sample
from litetext.calibration.int8 import METHODS
from litetext.errors import LitetextError
from litetext.export import export_bundle
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic

from benchmark_args import load_benchmark_model, prompt_arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prompt_arguments(parser)
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--json", default="benchmarks/results/int8_text_encoder.json")
    args = parser.parse_args()

    loaded = load_benchmark_model(args)
    calib = read_prompts(args.calib)
    held_out = read_prompts(args.eval)
    held_out = seeded_sample(held_out, args.eval_count)
    work = Path(args.work)
    log = lambda m: print("  ", m, flush=True)  # noqa: E731

    fp32 = export_bundle(loaded, work / "int8-ref-fp32", graphs=["text_encoder"], parity_prompts=held_out,
                         force=True, progress=log)
    fp32_bytes = fp32["graphs"]["text_encoder"]["bytes"]
    rows = []
    for method in METHODS:
        print(f"== {method}", flush=True)
        try:
            m = export_bundle(loaded, work / f"int8-{method}", graphs=["text_encoder"], precision="int8",
                              parity_prompts=held_out, calib_prompts=calib, calib_method=method, force=True,
                              progress=log)
        except LitetextError as e:
            rows.append({"method": method, "status": "failed", "error": str(e)})
            continue
        g = m["graphs"]["text_encoder"]
        rows.append({
            "method": method, "status": "ok", "bytes": g["bytes"], "size_vs_fp32": g["bytes"] / fp32_bytes,
            "held_out_parity": g["parity"]["outputs"]["text_features"], "calibration": g["calibration"],
            "export_seconds": g["export_seconds"],
        })
    result = {
        "benchmark": "int8_text_encoder", "model": args.model, "weights": loaded.weights_label,
        "calibration_prompts_available": len(calib), "held_out_prompts": len(held_out),
        "fp32_bytes": fp32_bytes, "machine": platform.platform(), "tools": tool_versions(), "rows": rows,
        "command": "python benchmarks/int8_text_encoder.py --calib " + " ".join(args.calib) + " --eval " + " ".join(args.eval),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)
    print(f"\n{'method':11s} {'MiB':>7s} {'x fp32':>7s} {'cos mean':>9s} {'worst 1%':>9s} {'min':>9s} {'max err':>8s} kept fp32")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['method']:11s} FAILED {r['error']}")
            continue
        p = r["held_out_parity"]
        print(f"{r['method']:11s} {r['bytes'] / 2**20:7.1f} {r['size_vs_fp32']:7.3f} {p['cosine_mean']:9.5f} "
              f"{p['cosine_worst_1pct']:9.5f} {p['cosine_min']:9.5f} {p['max_abs_error']:8.4f} "
              f"{r['calibration']['layers_kept_fp32_activations']}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
