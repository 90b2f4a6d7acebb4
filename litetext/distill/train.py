"""Knowledge distillation of a SAM3 text encoder into a SAM3-LiteText student, resumable and multi-GPU.

Layout of the output folder OUT::

    config.json, model.safetensors   the distilled Sam3LiteTextModel (written when training completes):
                                     `litetext export --checkpoint OUT` and `load_model(checkpoint=OUT)` take it
    run.json                         what the run is: settings, teacher and student identity, prompt hashes
    log.jsonl                        one JSON record per logged step ("loss") and per evaluation ("eval")
    distill.json                     summary written at the end (final held-out cosine, times)
    train/checkpoint.pt              student, optimizer and step (every --save-every steps; atomic)
    train/cache/<hash>/              teacher targets (see litetext.distill.targets)

Multi-GPU: launch the same command with ``torchrun --nproc_per_node N -m litetext.distill.cli ...`` (or the
`litetext distill` entry point under torchrun); with WORLD_SIZE > 1 the student is wrapped in
DistributedDataParallel (NCCL on GPUs, Gloo on CPUs), every process takes B / N prompts of each global batch of
B, and rank 0 alone writes files and evaluates. Without torchrun it is an ordinary single process.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from litetext.distill import losses
from litetext.distill.data import BatchOrder, prompts_digest, shuffle_words, tokenize
from litetext.distill.student import (StudentText, assemble, heads_width, new_student, student_from_model,
                                      student_text_config)
from litetext.distill.targets import Targets, load_or_compute, teacher_identity
from litetext.errors import LitetextError
from litetext.files import write_atomic, write_bytes_atomic

RUN_FILE, LOG_FILE, SUMMARY_FILE = "run.json", "log.jsonl", "distill.json"
CHECKPOINT = Path("train") / "checkpoint.pt"
CACHE = Path("train") / "cache"
# Settings a resumed run may change: they decide when things are written, not what is trained.
CADENCE = ("save_every", "eval_every", "log_every")


@dataclass
class DistillSettings:
    context_length: int = 16
    steps: int = 2000
    batch: int = 64  # global batch: split evenly over torchrun's processes
    lr: float = 2e-3
    weight_decay: float = 0.0  # AdamW, on matrices only (not norms, biases or the position table)
    warmup_steps: int = -1  # -1: 5% of steps
    min_lr_ratio: float = 0.01  # cosine decay from lr to lr * this at the last step
    mse_weight: float = 1.0
    cosine_weight: float = 2.0
    order_weight: float = 0.1
    clip_grad: float = 1.0
    seed: int = 0
    eval_count: int = 512  # held-out prompts measured (a seeded uniform sample)
    save_every: int = 100
    eval_every: int = 100
    log_every: int = 10

    def validate(self) -> None:
        for name in ("steps", "batch", "save_every", "eval_every", "log_every", "eval_count"):
            if getattr(self, name) < 1:
                raise LitetextError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise LitetextError(f"--lr must be positive, got {self.lr}")
        if self.context_length not in (8, 16, 32):
            raise LitetextError(f"--context-length must be 8, 16 or 32, got {self.context_length}")

    def lr_at(self, step: int) -> float:
        """Linear warmup to lr, then cosine decay to lr * min_lr_ratio at the last step (step is 0-based)."""
        warmup = self.warmup_steps if self.warmup_steps >= 0 else max(1, round(0.05 * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - 1 - warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# distributed ------------------------------------------------------------------------------------------------

@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()


def _world() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def _device(world: World) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def _agree(world: World, ok: bool, message: str) -> None:
    """Raise on every rank when rank 0 found a problem (so no process waits at a barrier forever)."""
    if world.size > 1:
        flag = torch.tensor([0 if ok else 1])
        torch.distributed.broadcast(flag, 0)
        ok = flag.item() == 0
    if not ok:
        raise LitetextError(message)


# files ------------------------------------------------------------------------------------------------------

def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _save_checkpoint(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(payload, f))


def resume_or_start(out: Path, module: torch.nn.Module, optimizer, resume: bool, device: torch.device, world: World,
                    steps: int, progress) -> int:
    """The step a run starts at: with `resume` and a checkpoint in `out`, the checkpoint's (model and optimizer
    loaded, the log cut back to it: later records' steps run again), else 0 with a fresh log."""
    start = 0
    if resume and (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, map_location=device, weights_only=True)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        if world.main:
            _rewrite_log(out / LOG_FILE, [r for r in read_log(out) if r["step"] <= start])
        progress(f"resuming at step {start} of {steps}")
    elif world.main:
        _rewrite_log(out / LOG_FILE, [])
    world.barrier()
    return start


def data_parallel(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """`module` itself, or wrapped for data parallelism when torchrun started several processes."""
    if world.size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[world.local_rank] if device.type == "cuda" else None)


def read_log(out: str | Path) -> list[dict]:
    path = Path(out) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rewrite_log(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))


class _Log:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())


# the run ----------------------------------------------------------------------------------------------------

def _run_description(teacher, student_init: dict, text_config: dict, settings: DistillSettings,
                     prompts: list[str], eval_prompts: list[str] | None) -> dict:
    return {
        "format": 1,
        "settings": {k: v for k, v in asdict(settings).items() if k not in CADENCE},
        "teacher": {**teacher_identity(teacher), "label": teacher.weights_label, "preset": teacher.preset},
        "student": {"init": student_init, "text_config": text_config},
        "prompts": {"count": len(prompts), "sha256": prompts_digest(prompts)},
        "eval_prompts": None if eval_prompts is None else
        {"count": len(eval_prompts), "sha256": prompts_digest(eval_prompts)},
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b and key != "label":
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def open_run(out: Path, run: dict, resume: bool, world: World, kind: str) -> None:
    """A fresh `kind` writes `run` to OUT's run.json; a resumed one must match it. All processes agree."""
    problem = None
    if world.main:
        try:
            check_out(out, resume, kind)
            if resume:
                diff = _differences(json.loads((out / RUN_FILE).read_text()), run)
                if diff:
                    raise LitetextError(f"--resume with other settings than the run in {out}: {'; '.join(diff[:4])}")
            else:
                out.mkdir(parents=True, exist_ok=True)
                _write_json(out / RUN_FILE, run)
        except LitetextError as e:
            problem = str(e)
    _agree(world, problem is None, problem or "")


def check_out(out: Path, resume: bool, run: str = "distillation run") -> None:
    """OUT holds a `run` to resume, or is new or empty for a fresh one."""
    if resume:
        if not (out / RUN_FILE).is_file():
            raise LitetextError(f"nothing to resume: {out} holds no {run} ({RUN_FILE})")
        return
    if (out / RUN_FILE).is_file():
        raise LitetextError(f"{out} holds a {run}; pass --resume to continue it, or choose another -o")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LitetextError(f"{out} exists and is not empty; choose another output folder")


@torch.no_grad()
def evaluate(student: StudentText, targets: Targets, device: torch.device, batch: int = 256) -> dict:
    """Held-out agreement with the teacher: per prompt the mean over valid tokens of cos(student, teacher),
    then its mean and 5th percentile over prompts; and the cosine of the valid-token means (pooled)."""
    token_cos, pooled_cos = [], []
    for start in range(0, len(targets), batch):
        rows = slice(start, start + batch)
        ids = torch.from_numpy(targets.tokens.input_ids[rows]).to(device)
        valid = torch.from_numpy(targets.tokens.valid_mask(rows)).to(device)
        teacher = torch.from_numpy(np.asarray(targets.features[rows], dtype=np.float32)).to(device)
        feats = student(ids)
        token_cos.append(losses.token_cosine(feats, teacher, valid).cpu())
        pooled_cos.append(torch.nn.functional.cosine_similarity(
            losses.pool(feats, valid), losses.pool(teacher, valid), dim=-1).cpu())
    tc, pc = torch.cat(token_cos).numpy(), torch.cat(pooled_cos).numpy()
    return {"cosine_mean": float(tc.mean()), "cosine_p05": float(np.percentile(tc, 5)),
            "cosine_min": float(tc.min()), "pooled_cosine_mean": float(pc.mean()), "prompts": int(len(tc))}


def _param_groups(student: StudentText, weight_decay: float) -> list[dict]:
    decay, keep = [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "position_embedding" not in name else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def distill(
    teacher,
    out: str | Path,
    prompts: list[str],
    eval_prompts: list[str] | None = None,
    student: str | Any = "litetext-s0",
    settings: DistillSettings | None = None,
    *,
    student_text_overrides: dict | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Distil `teacher` (a LoadedModel: SAM3 or a SAM3-LiteText) into `student` (a SAM3-LiteText preset name,
    randomly initialised with settings.seed, or a LoadedModel to start from) on `prompts`, measuring held-out
    agreement on `eval_prompts`. Writes OUT (see the module docstring) and returns the summary.

    resume: continue the run in OUT from its last checkpoint (its settings must match).
    stop_after: stop once this step is done, with a checkpoint, as if interrupted (resume later).
    on_step(step, record): called on every rank after each step (tests use it to simulate an interruption).
    """
    settings = settings or DistillSettings()
    settings.validate()
    if not prompts:
        raise LitetextError("no training prompts")
    out = Path(out).absolute()
    world = _world()
    try:
        return _distill(teacher, out, list(prompts), None if eval_prompts is None else list(eval_prompts),
                        student, settings, student_text_overrides, resume, stop_after, progress, on_step, world)
    finally:
        if world.owns_group:
            torch.distributed.destroy_process_group()


def _distill(teacher, out, prompts, eval_prompts, student_init, settings, overrides, resume, stop_after,
             progress, on_step, world: World) -> dict:
    ctx = settings.context_length
    device = _device(world)
    if settings.batch % world.size:
        raise LitetextError(f"--batch {settings.batch} must be divisible by the {world.size} processes")

    # the student's starting point
    width = heads_width(teacher)
    if isinstance(student_init, str):
        text_config = student_text_config(student_init, ctx, overrides)
        init = {"kind": "random", "preset": student_init, "seed": settings.seed}
        student = new_student(text_config, width, settings.seed)
    else:
        student = student_from_model(student_init, width)
        text_config = student.text_encoder.config.to_dict()
        init = {"kind": "checkpoint", **{k: v for k, v in student_init.weights.items() if k != "path"}}
    # as JSON sees it (int keys of config dicts become strings), so that it compares with run.json
    run = json.loads(json.dumps(_run_description(teacher, init, text_config, settings, prompts, eval_prompts)))
    if eval_prompts is not None:
        overlap = len(set(prompts) & set(eval_prompts))
        run["eval_prompts"]["also_in_training"] = overlap

    open_run(out, run, resume, world, "distillation run")

    # teacher targets: rank 0 computes and caches them, the others read the cache
    eval_set = None
    if eval_prompts is not None:
        rng = np.random.default_rng([settings.seed, 2])
        picked = sorted(rng.choice(len(eval_prompts), min(settings.eval_count, len(eval_prompts)), replace=False))
        eval_set = [eval_prompts[i] for i in picked]
    targets = eval_targets = None
    for rank_turn in (True, False):  # rank 0 first, then (after a barrier) the others
        if world.main == rank_turn:
            targets = load_or_compute(prompts, teacher, ctx, out / CACHE, device, progress, compute=world.main)
            if eval_set is not None:
                eval_targets = load_or_compute(eval_set, teacher, ctx, out / CACHE, device, progress,
                                               compute=world.main)
        world.barrier()
    truncated = int(targets.tokens.truncated.sum())
    if truncated:
        progress(f"{truncated} of {len(prompts)} training prompts are longer than the context {ctx} and were cut "
                 "(first tokens and the end token kept), for teacher and student alike")

    student.to(device)
    optimizer = torch.optim.AdamW(_param_groups(student, settings.weight_decay), lr=settings.lr,
                                  betas=(0.9, 0.999), eps=1e-8, fused=True)
    log = _Log(out / LOG_FILE, world.main)
    start = resume_or_start(out, student, optimizer, resume, device, world, settings.steps, progress)
    model = data_parallel(student, world, device)

    def checkpoint(step: int) -> None:
        if world.main:
            _save_checkpoint(out / CHECKPOINT, {"step": step, "model": student.state_dict(),
                                                "optimizer": optimizer.state_dict()})

    def run_eval(step: int) -> dict | None:
        if eval_targets is None or not world.main:
            return None
        record = {"step": step, "eval": evaluate(student, eval_targets, device)}
        log.write(record)
        progress(f"step {step:6d}  held-out cosine {record['eval']['cosine_mean']:.4f}")
        return record

    if start == 0:
        run_eval(0)
    order = BatchOrder(len(targets), settings.batch, settings.seed)
    local = settings.batch // world.size
    began = time.perf_counter()
    step = start
    status = "completed"
    model.eval()  # always: see litetext.distill.student (BatchNorm keeps its running statistics)
    while step < settings.steps:
        positions = order.indices(step)[world.rank * local : (world.rank + 1) * local]
        record = _train_step(model, optimizer, targets, prompts, positions, step, settings, device,
                             first_position=world.rank * local, world_size=world.size)
        step += 1
        record["seconds"] = round(time.perf_counter() - began, 3)
        if step % settings.log_every == 0 or step == settings.steps:
            log.write(record)
        stopping = stop_after is not None and step >= stop_after and step < settings.steps
        saving = step % settings.save_every == 0 or step == settings.steps or stopping
        evaluating = step % settings.eval_every == 0 or step == settings.steps
        if saving:
            checkpoint(step)
        if evaluating:
            run_eval(step)
        if saving or evaluating:
            world.barrier()  # the other processes wait while rank 0 writes and evaluates
        if on_step is not None:
            on_step(step, record)
        if stopping:
            status = "stopped"
            progress(f"stopped after step {step} (checkpoint written): continue with --resume")
            break

    summary = {"status": status, "step": step, "steps": settings.steps, "out": str(out)}
    if status == "completed":
        summary.update(_finish(out, student, teacher, settings, run, targets, eval_targets, world, progress))
    world.barrier()
    return summary


def _train_step(model, optimizer, targets: Targets, prompts: list[str], positions: np.ndarray, step: int,
                settings: DistillSettings, device, first_position: int, world_size: int = 1) -> dict:
    ids = targets.tokens.input_ids[positions]
    valid = targets.tokens.valid_mask(positions)
    teacher = torch.from_numpy(np.asarray(targets.features[positions], dtype=np.float32))
    # word-shuffled twins of the multi-word prompts
    twins, rows = [], []
    if settings.order_weight > 0:
        for row, index in enumerate(positions):
            twin = shuffle_words(prompts[index], settings.seed, step, first_position + row)
            if twin is not None:
                twins.append(twin)
                rows.append(row)
    batch_ids = ids
    if twins:
        twin_tokens = tokenize(twins, ids.shape[1])
        batch_ids = np.concatenate([ids, twin_tokens.input_ids])
    feats = model(torch.from_numpy(batch_ids).to(device))  # one forward for prompts and twins (one DDP pass)
    student, twin_feats = feats[: len(ids)], feats[len(ids) :]
    valid_t = torch.from_numpy(valid).to(device)
    teacher = teacher.to(device)
    mse = losses.masked_mse(student, teacher, valid_t)
    cosine = losses.masked_cosine_loss(student, teacher, valid_t)
    if twins:
        order = losses.word_order_loss(student[rows], valid_t[rows], twin_feats,
                                       torch.from_numpy(twin_tokens.valid_mask()).to(device))
    else:
        order = feats.sum() * 0.0
    loss = settings.mse_weight * mse + settings.cosine_weight * cosine + settings.order_weight * order
    lr = settings.lr_at(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
    optimizer.step()
    values = torch.stack([loss, mse, cosine, order]).detach()
    if world_size > 1:  # log the global batch's figures: the mean over processes (equal shares of the batch)
        torch.distributed.all_reduce(values)
        values /= world_size
    loss_v, mse_v, cosine_v, order_v = values.tolist()
    return {"step": step + 1, "loss": loss_v, "mse": mse_v, "cosine": 1.0 - cosine_v, "word_order": order_v,
            "lr": lr, "grad_norm": float(grad_norm)}


def _finish(out: Path, student: StudentText, teacher, settings, run, targets, eval_targets, world, progress) -> dict:
    """Write the distilled model (atomically: files are renamed into OUT once complete) and the summary."""
    if not world.main:
        return {}
    student.to("cpu")
    model = assemble(student, teacher)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".model-partial-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        files = sorted(tmp.iterdir(), key=lambda p: p.name == "config.json")  # config last: loadable when there
        for f in files:
            os.chmod(f, 0o644)
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log = read_log(out)
    evals = [r for r in log if "eval" in r]
    summary = {
        "model": str(out),
        "export": f"litetext export --checkpoint {out} --graphs text_encoder -o BUNDLE",
        "teacher": run["teacher"]["label"],
        "student": run["student"],
        "context_length": settings.context_length,
        "train_prompts": len(targets),
        "train_prompts_truncated": int(targets.tokens.truncated.sum()),
        "eval_prompts": None if eval_targets is None else len(eval_targets),
        "eval_first": evals[0]["eval"] if evals else None,
        "eval_final": evals[-1]["eval"] if evals else None,
        "final_loss": next((r["loss"] for r in reversed(log) if "loss" in r), None),
        "settings": asdict(settings),
    }
    _write_json(out / SUMMARY_FILE, summary)
    progress(f"wrote {out} (Sam3LiteTextModel, safetensors)")
    return summary

