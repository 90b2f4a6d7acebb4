"""Building a bundle's text path at export time: a fixed vocabulary's features, a pruned token table, and
their parity figures. See the package docstring."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from litetext.errors import LitetextError
from litetext.files import write_bytes_atomic
from litetext.vocabulary.stored import (PRUNED_FILE, PRUNED_KIND, SPECIAL_IDS, STORAGE_PRECISIONS, FixedVocabulary,
                                        PrunedTokenizer, PrunedVocabulary, _sha256, corpus_sha256, normalize_prompt)


def quantize_rows_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per row of the last axis: x ~ q * scale[..., None]."""
    amax = np.abs(x).max(axis=-1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(x / scale[..., None]), -127, 127).astype(np.int8)
    return q, scale



def build_fixed_vocabulary(loaded, prompts: Sequence[str], context_length: int, padding,
                           precision: str = "fp16", batch_size: int = 64) -> FixedVocabulary:
    """Text features of `prompts` through the PyTorch text graph of `loaded` (fp32), stored at `precision`.
    Prompts equal after cleaning are stored once (first spelling's position)."""
    import torch

    from litetext.models.graphs import build_graph
    from litetext.tokenizer import ClipTokenizer

    if precision not in STORAGE_PRECISIONS:
        raise LitetextError(f"fixed vocabulary storage is {' or '.join(STORAGE_PRECISIONS)}, not {precision!r}")
    if isinstance(prompts, str):
        prompts = [prompts]
    keys = list(dict.fromkeys(normalize_prompt(p) for p in prompts))
    keys_nonempty = [k for k in keys if k]
    if len(keys_nonempty) != len(keys) or not keys:
        raise LitetextError("the fixed vocabulary needs at least one prompt and no empty ones")
    tokens = ClipTokenizer()(keys, context_length=context_length, pad_id=padding.pad_id)
    graph = build_graph("text_encoder", loaded, context_length, padding)
    parts = []
    with torch.inference_mode():
        for i in range(0, len(keys), batch_size):
            ids = torch.from_numpy(tokens.input_ids[i : i + batch_size])
            mask = torch.from_numpy(tokens.attention_mask[i : i + batch_size])
            parts.append(graph(ids, mask).float().numpy())
    exact = np.concatenate(parts)
    scales = None
    if precision == "fp16":
        stored = exact.astype(np.float16)
        back = stored.astype(np.float32)
    else:
        stored, scales = quantize_rows_int8(exact)
        back = stored.astype(np.float32) * scales[..., None]
    valid = tokens.attention_mask.astype(bool)
    err = np.abs(back - exact)[valid]
    info = {
        "context_length": context_length,
        "text_padding": padding.name,
        "weights_label": getattr(loaded, "weights_label", ""),
        "truncated_prompts": int(tokens.num_truncated),
        # Error of the stored features against the fp32 PyTorch features, over valid tokens.
        "storage_error": {"max_abs_error": float(err.max()), "max_abs_reference": float(np.abs(exact[valid]).max())},
    }
    return FixedVocabulary(keys, stored, tokens.attention_mask.copy(), precision, scales, info)



def write_fixed_vocabulary(loaded, folder: str | Path, prompts: Sequence[str], context_length: int, padding,
                           precision: str = "fp16") -> dict[str, Any]:
    """build_fixed_vocabulary + save: what export_bundle calls; returns the manifest's text_path entry."""
    return build_fixed_vocabulary(loaded, prompts, context_length, padding, precision).save(folder)



def fixed_vocabulary_size_bytes(prompts: int, context_length: int, width: int, precision: str = "fp16") -> int:
    """Bytes of the stored arrays (features, mask, int8 scales), from shapes alone."""
    per_value = {"fp16": 2, "int8": 1}[precision]
    n = prompts * context_length
    return n * width * per_value + n + (4 * n if precision == "int8" else 0)



def _merge_parents() -> dict[int, tuple[int, int]]:
    """token id -> the ids of the merge that makes it (every non-byte, non-special token has exactly one)."""
    from litetext.tokenizer import load_merges, load_vocab

    vocab = load_vocab()
    return {vocab[a + b]: (vocab[a], vocab[b]) for a, b in load_merges()}



def prune_vocabulary(corpus_prompts: Iterable[str]) -> PrunedVocabulary:
    """Keep the tokens `corpus_prompts` use, the specials, the 512 byte tokens and the merge ancestors of all
    kept tokens (see the module docstring for why that keeps covered prompts' ids exact)."""
    from litetext.tokenizer import ClipTokenizer

    tok = ClipTokenizer()
    used: set[int] = set()
    for p in corpus_prompts:
        used.update(tok.encode(p))
    kept = set(used) | set(SPECIAL_IDS) | set(range(512))
    parents = _merge_parents()
    stack = list(kept)
    while stack:
        t = stack.pop()
        for p in parents.get(t, ()):
            if p not in kept:
                kept.add(p)
                stack.append(p)
    return PrunedVocabulary(np.array(sorted(kept), dtype=np.int64), corpus_tokens=len(used))



def pruned_figures(want: np.ndarray, got: np.ndarray, full_mask: np.ndarray, new_mask: np.ndarray,
                   covered: np.ndarray) -> dict[str, Any]:
    """Parity of a pruned text encoder: `want` [N, L, W] from the unpruned graph on CLIP's ids, `got` from the
    pruned one on the pruned tokenizer's ids. Covered prompts: per-token figures ("outputs", gated like any
    export). The others split into other tokens, so positions do not correspond: the cosine of the mean
    over valid tokens, and how many more tokens they take ("uncovered", reported, not gated)."""
    from litetext.calibration.parity import cosine_rows, tensor_parity

    covered = np.asarray(covered, dtype=bool)
    outputs = {}
    if covered.any():
        outputs["text_features"] = tensor_parity(want[covered], got[covered], new_mask[covered], per_token=True)

    def pooled(features, mask):
        m = mask[..., None].astype(np.float64)
        return (features.astype(np.float64) * m).sum(1) / m.sum(1)

    rest = ~covered
    a, b = pooled(want[rest], full_mask[rest]), pooled(got[rest], new_mask[rest])
    cos = cosine_rows(a, b)
    extra = new_mask[rest].sum(1) - full_mask[rest].sum(1)
    uncovered = {
        "prompts": int(rest.sum()),
        "pooled_cosine_mean": float(cos.mean()) if cos.size else None,
        "pooled_cosine_worst_1pct": float(np.percentile(cos, 1)) if cos.size else None,
        "pooled_cosine_min": float(cos.min()) if cos.size else None,
        "extra_tokens_mean": float(extra.mean()) if cos.size else None,
        "measure": "cosine of the mean valid-token features, unpruned graph on CLIP's ids against the pruned "
                   "graph on the pruned tokenizer's ids; not gated",
    }
    coverage = {"prompts": len(covered), "covered": int(covered.sum()), "coverage": float(covered.mean())}
    return {"outputs": outputs, "coverage": coverage, "uncovered": uncovered}



class PrunedParity:
    """Parity prompts for a pruned text encoder, tokenized twice: CLIP's ids for the unpruned PyTorch reference,
    the pruned tokenizer's NEW ids for the artifact."""

    BATCH = 8

    def __init__(self, pruned: PrunedVocabulary, prompts: Sequence[str], context_length: int, padding):
        self.vocabulary = pruned
        self.tokenizer = PrunedTokenizer(pruned.tokenizer_json(context_length, padding.pad_id), pruned)
        self.full, self.new, self.covered = self.tokenizer.compare(prompts, context_length, padding.pad_id)
        self.figures: dict[str, Any] | None = None  # the last measure()
        if not self.covered.any():
            raise LitetextError(
                f"none of the {len(prompts)} parity prompts is covered by the pruned vocabulary (all its tokens "
                "kept), so the pruned text encoder cannot be checked exactly; pass --parity-prompts made of the "
                "corpus's words (held-out prompts of the same kind), or prune with a larger corpus"
            )

    def batches(self) -> list[dict[str, np.ndarray]]:
        """The artifact's feeds (NEW ids)."""
        return self.new.feeds(self.BATCH)

    def measure(self, reference, runner) -> dict[str, Any]:
        """pruned_figures of `runner` (the artifact, fed NEW ids) against `reference` (the unpruned graph)."""
        want = np.concatenate([reference.infer(f)["text_features"] for f in self.full.feeds(self.BATCH)])
        got = np.concatenate([runner.infer(f)["text_features"] for f in self.batches()])
        self.figures = pruned_figures(want, got, self.full.attention_mask, self.new.attention_mask, self.covered)
        return self.figures



def text_parameters(loaded, kept_tokens: int | None = None) -> int:
    """Parameters of a student's text encoder and projection (PyTorch), with its token table cut to
    `kept_tokens` rows when given."""
    text = loaded.model.text_encoder
    tensors = {id(p): p.numel() for m in (text, loaded.model.text_projection) for p in m.parameters()}
    table = text.embeddings.token_embedding.weight
    cut = 0 if kept_tokens is None else (table.shape[0] - kept_tokens) * table.shape[1]
    return sum(tensors.values()) - cut



def write_pruned_text_path(folder: str | Path, pruned: PrunedVocabulary, corpus: Sequence[str], loaded,
                           context_length: int, padding, figures: dict[str, Any], graph_bytes: int) -> dict[str, Any]:
    """Write the pruned tokenizer.json (NEW ids) and pruned_tokens.json (kept CLIP ids) into `folder`, each
    atomically, and return the manifest's text_path entry: corpus, kept tokens and merges, parameters and bytes
    before and after, coverage of the parity prompts and the parity of the uncovered ones (`figures`, from
    PrunedParity.measure)."""
    from litetext.tokenizer import NUM_MERGES, VOCAB_SIZE

    folder = Path(folder)
    tokenizer = pruned.tokenizer_json(context_length, padding.pad_id).encode("utf-8")
    kept = json.dumps(pruned.to_json()).encode("utf-8")
    write_bytes_atomic(folder / "tokenizer.json", tokenizer)
    write_bytes_atomic(folder / PRUNED_FILE, kept)
    before, after = text_parameters(loaded), text_parameters(loaded, len(pruned))
    return {
        "kind": PRUNED_KIND,
        "graph": "text_encoder",
        "tokenizer_file": "tokenizer.json",
        "pruned_tokens_file": PRUNED_FILE,
        "ids": "NEW ids: the position of the CLIP id in pruned_tokens.json's kept_ids (ascending); tokenize with "
               "this bundle's tokenizer.json",
        "rule": pruned.to_json()["rule"],
        "corpus": {"prompts": len(corpus), "sha256": corpus_sha256(corpus), "tokens": pruned.corpus_tokens},
        "kept_tokens": len(pruned),
        "vocabulary_size": VOCAB_SIZE,
        "kept_merges": len(pruned.merges()),
        "merges": NUM_MERGES,
        "parameters": {"before": before, "after": after, "ratio": round(after / before, 4),
                       "counted": "PyTorch text encoder and projection"},
        "bytes": {"text_encoder": graph_bytes, "tokenizer_json": len(tokenizer),
                  "text_path": graph_bytes + len(tokenizer)},
        "parity_prompts": {**figures["coverage"],
                           "covered_parity": "graphs.text_encoder.parity.outputs (gated as any export)"},
        "uncovered_parity": figures["uncovered"],
        "sha256": {"tokenizer.json": _sha256(tokenizer), PRUNED_FILE: _sha256(kept)},
    }
