"""Distillation on tiny configs, on this CPU: does held-out cosine to the teacher go from about 0 to above 0.9,
and does the result export?

Teacher: the tests' tiny SAM3 (CLIP text 32 wide, 2 layers, RANDOM weights, seed 0). Student: a tiny
LiteText (64 wide, 3 layers, RepMixer first and last), random init (seed 0). Trained on the calibration split,
measured on 1,000 held-out prompts (seeded sample of the eval split), then exported to ONNX (text encoder).
A random teacher is a well-defined function to imitate, not a trained encoder: this checks the machinery
(losses, schedule, caching, checkpoints, export), not the quality of a real student.

    python benchmarks/distill_tiny.py --calib ../shared/data/prompts/calib --eval ../shared/data/prompts/eval
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import tiny_model  # noqa: E402  the tests' tiny configs

from litetext.calibration.data import read_prompts  # noqa: E402
from litetext.distill import DistillSettings, distill, read_log  # noqa: E402
from litetext.export import export_bundle  # noqa: E402
from litetext.models.loading import load_model  # noqa: E402

STUDENT_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                    use_repmixer_blocks=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib", nargs="+", default=["../shared/data/prompts/calib"])
    parser.add_argument("--eval", nargs="+", default=["../shared/data/prompts/eval"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest for these tiny matrices")
    parser.add_argument("--work", default="benchmarks/work/distill-tiny")
    parser.add_argument("--json", default="benchmarks/results/distill_tiny.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*RANDOM.*")

    work = Path(args.work)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    start = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - start:6.1f}s] {m}", flush=True)  # noqa: E731
    teacher = tiny_model("sam3")
    settings = DistillSettings(steps=args.steps, batch=args.batch, lr=args.lr, eval_count=1000, eval_every=50,
                               save_every=100, log_every=10)
    summary = distill(teacher, work / "run", read_prompts(args.calib), read_prompts(args.eval), "litetext-s0",
                      settings, student_text_overrides=STUDENT_TEXT, progress=log)
    train_seconds = time.perf_counter() - start
    loaded = load_model(checkpoint=work / "run")
    manifest = export_bundle(loaded, work / "bundle", graphs=["text_encoder"],
                             parity_prompts=read_prompts(args.eval)[:200], force=True, progress=log)
    curve = [{"step": r["step"], **r["eval"]} for r in read_log(work / "run") if "eval" in r]
    result = {
        "what": "tiny distillation on CPU: held-out cosine to a RANDOM tiny teacher, then ONNX export",
        "command": "python benchmarks/distill_tiny.py " + " ".join(
            f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads,
                    "torch": torch.__version__},
        "teacher": teacher.weights_label + " (tests/conftest.py tiny sam3)",
        "student_text_config": STUDENT_TEXT,
        "settings": summary["settings"],
        "train_prompts": summary["train_prompts"],
        "train_prompts_truncated": summary["train_prompts_truncated"],
        "eval_prompts": summary["eval_prompts"],
        "seconds_to_train": round(train_seconds, 1),
        "held_out_cosine": curve,
        "final_loss": summary["final_loss"],
        "export": {"graphs": list(manifest["graphs"]), "passed_parity": True},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    first, last = curve[0], curve[-1]
    print(f"held-out cosine {first['cosine_mean']:.4f} (step 0) -> {last['cosine_mean']:.4f} (step {last['step']}), "
          f"p05 {last['cosine_p05']:.4f}; {train_seconds:.0f} s; exported {list(manifest['graphs'])} -> {args.json}")


if __name__ == "__main__":
    main()
