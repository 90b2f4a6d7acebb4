"""Teacher targets, computed once and cached on disk under a content hash.

The targets are the teacher's projected per-token text features (what SAM3's heads consume) for the exact
token sequence the student sees: the teacher's text graph runs at the student's context with the student's
padding (pad 0, no mask), so position t of the target is the teacher's feature for token t of the student's
input, start and end tokens included. SAM3's CLIP text encoder is causal, so for a prompt that fits the
context these valid-token features equal the teacher's at context 32 (a test checks it); for a prompt the
context cuts, the target is the teacher's feature for the cut sequence (first L - 2 BPE tokens, then the end
token), which is what upstream EfficientSAM3 does (its teacher embeddings are saved at the student's context).

A cache entry is a folder ``cache/<hash>/`` with ``input_ids.npy`` (int64 [N, L]), ``lengths.npy``,
``targets.npy`` (float16 [N, L, D], as upstream stores them) and ``meta.json``; the hash covers the prompts
(in order), the teacher (its weights' identity and its config), the context and the padding. It is built in
a hidden folder and renamed into place, so an interrupted run never leaves a partial entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from litetext.distill.data import PAD_ID, Tokens, prompts_digest, tokenize

CACHE_FORMAT = 1
TARGET_DTYPE = np.float16


def teacher_identity(teacher) -> dict:
    """What identifies a teacher's outputs: its weights (checkpoint sha256, or random and the seed) and config."""
    config = teacher.model.config.to_json_string(use_diff=False)
    return {
        "family": teacher.family,
        "weights": {k: v for k, v in teacher.weights.items() if k in ("kind", "seed", "sha256", "format")},
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
    }


def cache_key(prompts: list[str], teacher, context_length: int) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "prompts_sha256": prompts_digest(prompts),
        "count": len(prompts),
        "teacher": teacher_identity(teacher),
        "context_length": context_length,
        "padding": {"pad_id": PAD_ID, "attention_mask": False},
        "dtype": np.dtype(TARGET_DTYPE).name,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class Targets:
    key: str
    tokens: Tokens
    features: np.ndarray  # float16 [N, L, D] (memory-mapped)
    path: Path
    computed: bool  # False when it came from the cache

    def __len__(self) -> int:
        return len(self.tokens.lengths)


@torch.no_grad()
def teacher_features(teacher, input_ids: np.ndarray, device: torch.device, batch: int = 256):
    """Yield the teacher's text features (float32 numpy) for `input_ids`, `batch` rows at a time."""
    from litetext.models.graphs import build_graph, get_padding

    graph = build_graph("text_encoder", teacher, input_ids.shape[1], get_padding("upstream")).to(device)
    try:  # moving the graph moves the teacher's text encoder (only) to the device, and back afterwards
        for start in range(0, len(input_ids), batch):
            ids = torch.from_numpy(input_ids[start : start + batch]).to(device)
            yield graph(ids).float().cpu().numpy()
    finally:
        graph.to("cpu")


def load_or_compute(prompts: list[str], teacher, context_length: int, cache_dir: Path, device: torch.device,
                    progress=lambda message: None, compute: bool = True) -> Targets:
    """The cached targets for these prompts and this teacher, computing and caching them when missing.
    With compute=False (ranks other than 0) the entry must already exist."""
    key = cache_key(prompts, teacher, context_length)
    folder = Path(cache_dir) / key[:24]
    if not (folder / "meta.json").is_file():
        if not compute:
            raise RuntimeError(f"teacher targets {folder} are missing (rank 0 should have written them)")
        _compute(prompts, teacher, context_length, folder, key, device, progress)
        computed = True
    else:
        computed = False
        progress(f"teacher targets for {len(prompts)} prompts: cached in {folder}")
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("key") != key:
        raise RuntimeError(f"{folder} holds targets for another key; delete it")
    tokens = Tokens(*(np.load(folder / f"{name}.npy") for name in ("input_ids", "lengths", "truncated")))
    features = np.load(folder / "targets.npy", mmap_mode="r")
    return Targets(key, tokens, features, folder, computed)


def _compute(prompts, teacher, context_length, folder: Path, key: str, device, progress) -> None:
    tokens = tokenize(prompts, context_length)
    progress(f"teacher targets for {len(prompts)} prompts at context {context_length}: computing")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        width = int(teacher.model.config.detr_encoder_config.hidden_size)
        out = np.lib.format.open_memmap(tmp / "targets.npy", mode="w+", dtype=TARGET_DTYPE,
                                        shape=(len(prompts), context_length, width))
        row = 0
        for chunk in teacher_features(teacher, tokens.input_ids, device):
            out[row : row + len(chunk)] = chunk.astype(TARGET_DTYPE)
            row += len(chunk)
        out.flush()
        del out
        np.save(tmp / "input_ids.npy", tokens.input_ids)
        np.save(tmp / "lengths.npy", tokens.lengths)
        np.save(tmp / "truncated.npy", tokens.truncated)
        meta = {"key": key, "format": CACHE_FORMAT, "prompts": len(prompts), "context_length": context_length,
                "width": width, "dtype": np.dtype(TARGET_DTYPE).name, "teacher": teacher_identity(teacher),
                "truncated_prompts": int(tokens.truncated.sum())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if folder.exists():  # a stale entry without meta.json (cannot be a complete one: we checked)
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

