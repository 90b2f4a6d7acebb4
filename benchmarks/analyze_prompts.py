"""Prompt anatomy of the shared prompts: lengths, padding and truncation per context, vocabulary, coverage of
the held-out split, and the embedding geometry of a model.

Analyses the calibration split with the eval split as held-out set (its vocabulary coverage is measured, nothing
is fitted on it), and the eval split on its own (anatomy only: it is the closer match to the paper's mix of
category names and referring expressions). The geometry uses full-size LiteText-S0 with RANDOM weights (seed 0)
unless --checkpoint is given: random weights say nothing about what a trained encoder's embeddings use.

    python benchmarks/analyze_prompts.py --calib ../shared/data/prompts/calib --eval ../shared/data/prompts/eval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from litetext.analysis import analyze
from litetext.analysis.report import write_report

from benchmark_args import load_benchmark_model, model_arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib", nargs="+", default=["../shared/data/prompts/calib"])
    parser.add_argument("--eval", nargs="+", default=["../shared/data/prompts/eval"])
    model_arguments(parser)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/analysis")
    args = parser.parse_args()

    out = Path(args.out)
    log = lambda m: print(f"[{time.perf_counter() - start:6.1f}s] {m}", flush=True)  # noqa: E731
    start = time.perf_counter()
    loaded = load_benchmark_model(args)
    result = analyze(args.calib, holdout=args.eval, loaded=loaded, sample=args.sample, seed=0, progress=log)
    result["command"] = "python benchmarks/analyze_prompts.py " + " ".join(
        f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if v is not None)
    write_report(result, out)
    (out / "analysis.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out}/analysis.json, report.md and plots")

    held_out = analyze(args.eval, progress=log)
    held_out["command"] = result["command"]
    (out / "eval_split.json").write_text(json.dumps(held_out, indent=1) + "\n")
    log(f"wrote {out}/eval_split.json")
    for name, r in (("calib", result), ("eval", held_out)):
        o = r["overall"]
        row = "  ".join(f"L={c}: pad {100 * s['padding_waste']:.1f}% cut {100 * s['truncated_share']:.1f}%"
                        for c, s in o["contexts"].items())
        print(f"{name}: {o['prompts']:,} prompts, mean {o['lengths']['mean']:.2f}  {row}")


if __name__ == "__main__":
    main()
