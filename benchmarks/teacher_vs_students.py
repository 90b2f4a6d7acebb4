"""SAM3's teacher text encoder against the SAM3-LiteText students: latency, memory and parity, one device.

The teacher (CLIP text, 354M parameters, context 32) runs in eager PyTorch fp32. Each student (S0, S1, L;
context 16 by default) runs in eager PyTorch and as ONNX Runtime bundles exported here, one per precision,
each compared against the same student in PyTorch. Weights are RANDOM (seeded): no checkpoint can be
downloaded here, so latency and memory are real and outputs mean nothing; every record says so.

    python benchmarks/teacher_vs_students.py                      # everything (long on a laptop CPU)
    python benchmarks/teacher_vs_students.py --models sam3,litetext-s0 --batch 1 --threads 1
    python benchmarks/teacher_vs_students.py --precisions fp32,fp16,int8   # once INT8 export exists

Bundles go to benchmarks/work/ (git-ignored) and are reused when their manifest matches; JSON and a report
(report.md, latency_vs_memory.png, parity.png) go to benchmarks/results/. A precision the exporter rejects
becomes failed records with the exporter's reason.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import time
from pathlib import Path

from litetext.benchmarks import (TimingOptions, TorchTarget, BundleTarget, failed_records, run_bench, write_report,
                                 write_results)
from litetext.calibration.data import builtin_prompts, read_prompts
from litetext.export import export_bundle
from litetext.models.loading import load_model

MODELS = ["sam3", "litetext-s0", "litetext-s1", "litetext-l"]
TEACHER_CONTEXT = 32


def progress_printer():
    start = time.perf_counter()
    return lambda message: print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)


def bundle_matches(path: Path, preset: str, seed: int, init: str, ctx: int, precision: str) -> bool:
    """An earlier export of the same model, weights, context and precision (reused unless --force-export)."""
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (m.get("precision") == precision and m.get("context_length") == ctx and m["model"].get("preset") == preset
            and m["model"]["weights"] == {"kind": "random", "seed": seed, "init": init}
            and "text_encoder" in m.get("graphs", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated presets (default: all four)")
    parser.add_argument("--precisions", default="fp32,fp16",
                        help="ONNX Runtime bundle precisions for the students (e.g. fp32,fp16,int8)")
    parser.add_argument("--teacher-precisions", default="",
                        help="also export the teacher at these precisions (default: eager PyTorch only)")
    parser.add_argument("--batch", default="1,8", help="batch sizes (default 1,8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--init", default="stress", choices=["stress", "transformers"],
                        help="random weights: stress (every layer matters) or transformers' own initialisation")
    parser.add_argument("--student-context", type=int, default=16, help="students' context length (16 or 32)")
    parser.add_argument("--prompts", nargs="+", help="prompt files or folders (default: the 80 COCO names)")
    parser.add_argument("--work", default="benchmarks/work", help="folder for the exported bundles")
    parser.add_argument("--json", default="benchmarks/results/teacher_vs_students.json")
    parser.add_argument("--report", default="benchmarks/results/teacher_vs_students")
    parser.add_argument("--min-runs", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int,
                        help="intra-op threads for PyTorch and ONNX Runtime (default: theirs). On a shared or "
                             "busy machine use 1: a multi-threaded op waits for its slowest thread")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probes")
    parser.add_argument("--force-export", action="store_true", help="export again even when a bundle matches")
    args = parser.parse_args()

    progress = progress_printer()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    teacher_precisions = [p for p in args.teacher_precisions.split(",") if p]
    batches = [int(b) for b in args.batch.split(",") if b]
    prompts = read_prompts(args.prompts) if args.prompts else builtin_prompts()
    timing = TimingOptions(min_runs=args.min_runs, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    work = Path(args.work)
    records = []

    for preset in models:
        ctx = TEACHER_CONTEXT if preset == "sam3" else args.student_context
        progress(f"== {preset}: loading (random weights, seed {args.seed}, {args.init} init, context {ctx})")
        loaded = load_model(preset, random_init=True, seed=args.seed, init=args.init, context_length=ctx,
                            graphs=["text_encoder"])
        torch_target = TorchTarget.from_loaded(loaded, context_length=ctx, label=f"torch:{preset}")
        targets = [torch_target]
        for precision in teacher_precisions if preset == "sam3" else precisions:
            out = work / f"{preset}-text-ctx{ctx}-{precision}"
            try:
                if args.force_export or not bundle_matches(out, preset, args.seed, args.init, ctx, precision):
                    progress(f"{preset}: exporting the text encoder to ONNX {precision} -> {out}")
                    export_bundle(loaded, out, graphs=["text_encoder"], context_length=ctx, precision=precision,
                                  parity_prompts=prompts, force=True, progress=lambda m: progress(f"  {m}"))
                else:
                    progress(f"{preset}: reusing {out}")
                targets.append(BundleTarget(out, threads=args.threads))
            except Exception as e:  # an exporter that rejects a precision, or a parity gate that fails
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                progress(f"{preset} {precision}: export FAILED: {reason}")
                records += failed_records(str(out), "onnxruntime", precision, torch_target.model_info(),
                                          "text_encoder", batches, f"export failed: {reason}", ctx, "upstream",
                                          {"command": command})
        records += run_bench(targets, graphs=["text_encoder"], batches=batches, prompts=prompts,
                             reference=torch_target, timing=timing, memory=not args.no_memory, progress=progress,
                             command=command)
        for target in targets:
            target.release()
        del loaded, torch_target, targets
        gc.collect()
        write_results(records, args.json, command=command)  # after each model, so a long run keeps its results

    write_results(records, args.json, command=command)
    paths = write_report(records, args.report)
    progress(f"wrote {args.json} and {', '.join(str(p) for p in paths.values())}")
    print(f"\n{'model':13s} {'runtime':12s} {'prec':5s} {'batch':>5s} {'p50 ms':>9s} {'p90 ms':>9s} "
          f"{'weights MiB':>11s} {'RSS MiB':>8s} {'peak MiB':>8s} {'min cos':>9s}  status")
    for r in records:
        lat, mem = r.get("latency_ms") or {}, r.get("memory_mb") or {}
        outputs = (r.get("parity") or {}).get("outputs") or {}
        cos = f"{outputs['text_features']['cosine_min']:.6f}" if "text_features" in outputs else "-"
        fmt = lambda v, s: "-" if v is None else format(v, s)  # noqa: E731
        print(f"{r['model']['preset']:13s} {r['runtime']:12s} {r['precision']:5s} {r['batch']:5d} "
              f"{fmt(lat.get('p50'), '9.2f')} {fmt(lat.get('p90'), '9.2f')} {fmt(mem.get('weights'), '11.1f')} "
              f"{fmt(mem.get('rss_after_load'), '8.1f')} {fmt(mem.get('peak_rss_load'), '8.1f')} {cos:>9s}  "
              f"{r['status']}{': ' + r['error'] if r.get('error') else ''}")
    print("NOTE: RANDOM weights: latency and memory are real; outputs mean nothing.")


if __name__ == "__main__":
    main()
