"""`litetext distill`: distil a teacher's text features into a SAM3-LiteText student.

Registered on the main command group with `main.add_command(distill)`. Under torchrun (several processes,
one per GPU) run it as a module: ``torchrun --nproc_per_node 8 -m litetext.distill.cli --teacher ...``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from litetext.cli_helpers import friendly_errors
from litetext.errors import LitetextError


def _load_teacher(teacher: str, teacher_model: str | None, random_init: bool, teacher_seed: int):
    from litetext.models.loading import load_model
    from litetext.models.presets import PRESETS

    if Path(teacher).exists():
        if random_init:
            raise LitetextError("--random-init is for a preset teacher; --teacher names a checkpoint")
        return load_model(teacher_model or ("sam3" if Path(teacher).is_file() else None), teacher)
    if teacher not in PRESETS:
        raise LitetextError(f"--teacher {teacher!r} is neither a checkpoint that exists nor a preset "
                            f"({', '.join(PRESETS)})")
    if not random_init:
        raise LitetextError(f"--teacher {teacher} has no weights: pass --teacher CHECKPOINT, or add --random-init "
                            "for a seeded random teacher (tests and demos only)")
    return load_model(teacher, random_init=True, seed=teacher_seed)


def _check_student(student: str) -> None:
    from litetext.models.presets import PRESETS

    if student not in PRESETS and not Path(student).is_dir():
        raise LitetextError(f"--student {student!r} is neither a SAM3-LiteText preset (litetext-s0, litetext-s1, "
                            "litetext-l) nor a transformers checkpoint folder")


def _student(student: str):
    from litetext.models.loading import load_model
    from litetext.models.presets import PRESETS

    _check_student(student)
    return student if student in PRESETS else load_model(checkpoint=student)


@click.command("distill")
@click.option("--teacher", required=True, metavar="PRESET|CHECKPOINT",
              help="SAM3 checkpoint (transformers folder or upstream .pt), or a preset with --random-init.")
@click.option("--teacher-model", metavar="PRESET", help="Architecture of an upstream .pt teacher (default: sam3).")
@click.option("--random-init", is_flag=True, help="Random teacher weights (seeded by --teacher-seed): demos, tests.")
@click.option("--teacher-seed", type=int, default=0, show_default=True, help="Seed of a --random-init teacher.")
@click.option("--student", required=True, metavar="PRESET|CHECKPOINT",
              help="litetext-s0, litetext-s1, litetext-l (random init, seeded by --seed) or a transformers "
                   "SAM3-LiteText folder to start from.")
@click.option("--context-length", type=int, default=16, show_default=True, help="Student context (tokens).")
@click.option("--prompts", multiple=True, required=True, type=click.Path(),
              help="Training prompt files or folders (one prompt a line).")
@click.option("--eval-prompts", multiple=True, type=click.Path(),
              help="Held-out prompt files or folders: cosine to the teacher is logged as it trains.")
@click.option("--steps", type=int, default=2000, show_default=True, help="Optimizer steps.")
@click.option("--batch", type=int, default=64, show_default=True, help="Global batch (split over processes).")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate (AdamW, cosine).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="AdamW weight decay (matrices).")
@click.option("--cosine-weight", type=float, default=2.0, show_default=True, help="Weight of the cosine term.")
@click.option("--order-weight", type=float, default=0.1, show_default=True, help="Weight of the word-order term.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the student, batches and shuffles.")
@click.option("--save-every", type=int, default=100, show_default=True, help="Checkpoint every N steps.")
@click.option("--eval-every", type=int, default=100, show_default=True, help="Held-out evaluation every N steps.")
@click.option("--eval-count", type=int, default=512, show_default=True, help="Held-out prompts measured.")
@click.option("-o", "--out", required=True, type=click.Path(), help="Run folder; the distilled model lands here.")
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its last checkpoint.")
@click.option("--stop-after", type=int, metavar="STEP",
              help="Stop after this step with a checkpoint (for time-limited jobs); continue with --resume.")
@friendly_errors
def distill(teacher, teacher_model, random_init, teacher_seed, student, context_length, prompts, eval_prompts,
            steps, batch, lr, weight_decay, cosine_weight, order_weight, seed, save_every, eval_every, eval_count,
            out, resume, stop_after):
    """Distil TEACHER's per-token text features into a SAM3-LiteText STUDENT.

    Loss over valid tokens: MSE + cosine-weight x (1 - cosine) + order-weight x word-order term. Teacher
    targets are cached in OUT/train/cache; checkpoints go to OUT/train/checkpoint.pt; the log to
    OUT/log.jsonl. At the end OUT holds a Sam3LiteTextModel (student text encoder, teacher's vision encoder
    and heads) that `litetext export --checkpoint OUT` takes.

    \b
      litetext distill --teacher sam3-ckpt/ --student litetext-s0 --prompts data/calib \\
          --eval-prompts data/eval --steps 20000 --batch 256 -o runs/s0
      torchrun --nproc_per_node 8 -m litetext.distill.cli --teacher sam3-ckpt/ --student litetext-s0 ...
    """
    import os

    from litetext.calibration.data import read_prompts
    from litetext.distill.train import CHECKPOINT, DistillSettings, check_out
    from litetext.distill.train import distill as run_distill

    rank0 = int(os.environ.get("RANK", "0")) == 0
    start = time.perf_counter()

    def progress(message: str) -> None:
        if rank0:
            click.echo(f"[{time.perf_counter() - start:7.1f}s] {message}", err=True)

    settings = DistillSettings(context_length=context_length, steps=steps, batch=batch, lr=lr,
                               weight_decay=weight_decay, cosine_weight=cosine_weight, order_weight=order_weight,
                               seed=seed, save_every=save_every, eval_every=eval_every, eval_count=eval_count)
    settings.validate()
    check_out(Path(out).absolute(), resume)  # before anything loads: fail fast, in one line
    train_prompts = read_prompts(list(prompts))
    held_out = read_prompts(list(eval_prompts)) if eval_prompts else None
    _check_student(student)
    teacher_loaded = _load_teacher(teacher, teacher_model, random_init, teacher_seed)
    student_init = _student(student)
    try:
        summary = run_distill(teacher_loaded, out, train_prompts, held_out, student_init, settings, resume=resume,
                              stop_after=stop_after, progress=progress)
    except KeyboardInterrupt:
        checkpoint = Path(out) / CHECKPOINT
        where = "no checkpoint was written yet" if not checkpoint.is_file() else \
            f"the last checkpoint is {checkpoint}: continue with --resume"
        click.secho(f"interrupted: {where}", fg="red", err=True)
        sys.exit(130)
    if not rank0:
        return
    if summary["status"] == "stopped":
        click.echo(f"stopped at step {summary['step']} of {summary['steps']}: continue with --resume")
        return
    final = summary.get("eval_final")
    first = summary.get("eval_first")
    if final:
        click.echo(f"held-out cosine to the teacher: {first['cosine_mean']:.4f} at step 0, "
                   f"{final['cosine_mean']:.4f} at step {summary['step']} ({final['prompts']} prompts)")
    click.echo(f"final loss {summary['final_loss']:.5f}; model: {summary['model']}")
    if teacher_loaded.is_random:
        click.secho(f"NOTE: teacher has {teacher_loaded.weights_label}", fg="yellow", err=True)


if __name__ == "__main__":
    distill()
