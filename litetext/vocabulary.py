"""Fixed-vocabulary bundles and pruned token tables: two ways to shrink the text path for apps that know
their prompts (fully, or roughly) ahead of time.

Fixed vocabulary
    ``build_fixed_vocabulary(loaded, prompts, ctx, padding)`` runs the PyTorch text graph once, at export
    time, on a known list of prompts and stores the per-token text features the heads take
    (``text_features.npz``: fp16, or int8 with one scale per prompt and token) beside the list
    (``vocabulary.txt``). The app then needs no text encoder and no tokenizer:
    ``FixedVocabulary.lookup(prompt)`` returns ``text_features`` [1, L, 256] float32 and ``attention_mask``
    [1, L] int64, the heads' two text inputs. Prompts are matched after the tokenizer's own cleaning
    (:func:`litetext.tokenizer.clean_text`: ftfy, HTML entities, whitespace collapsed, lower case), so
    "Person " finds "person"; a prompt not in the list is a :class:`LitetextError` naming the list file and
    the closest names.

Pruned token table
    ``prune_vocabulary(corpus_prompts)`` keeps the tokens a corpus uses, the specials (start 49406, end
    49407, and 0, the upstream pad), the 256 byte tokens and the 256 byte+``</w>`` tokens (so every text still
    tokenizes), and every token the kept ones are built from through BPE merges (their merge ancestors).
    The merges kept are exactly those whose output is kept (in their original rank order).

    Why that rule gives identical ids on covered text: in CLIP's table each token is the output of exactly one
    merge, so the only way BPE makes a kept token t is through t's merge, whose inputs are made through theirs:
    every token BPE makes on the way to t is one of t's ancestors, kept. BPE with the reduced merge list
    therefore finds, at every step, the same lowest-ranked pair as the full list (that pair's output is kept,
    so its merge is kept; the reduced list is a subset of the full one with the same ranks) and stops when it
    does. A word whose full tokenization uses only kept tokens gets the same tokens; any other word gets a
    coarser split that uses only kept tokens (bytes at worst), which is the closest the table can express.

    Ids are remapped old -> new in ascending old order (contiguous), so the bytes keep ids 0..511, the pad 0
    stays 0 and the end token stays the largest id. ``write_tokenizer_json`` writes a ``tokenizers`` file with
    the NEW ids, and ``prune_onnx_text_encoder`` slices the rows of the token table initializer (any exported
    text_encoder, fp32 or fp16) by the kept old ids. A prompt whose tokens are all kept gives exactly the
    unpruned features (ONNX Runtime, max error 0).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from litetext.errors import LitetextError

FEATURES_FILE = "text_features.npz"
PROMPTS_FILE = "vocabulary.txt"
META_FILE = "vocabulary.json"
PRUNED_FILE = "pruned_tokens.json"
STORAGE_PRECISIONS = ("fp16", "int8")
KIND = "fixed_vocabulary"


# Atomic writes -----------------------------------------------------------------------------------------------

def _write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalize_prompt(prompt: str) -> str:
    """The key a prompt is stored and looked up under: the tokenizer's cleaning (so equal keys tokenize
    equally)."""
    from litetext.tokenizer import clean_text

    if not isinstance(prompt, str):
        raise TypeError(f"expected a prompt string, got {type(prompt).__name__}")
    return clean_text(prompt)


# Fixed vocabulary --------------------------------------------------------------------------------------------

@dataclass
class FixedVocabulary:
    """Text features of a known list of prompts, stored instead of a text encoder."""

    prompts: list[str]  # normalized keys, in list order, unique
    features: np.ndarray  # float16 [N, L, W] or int8 [N, L, W]
    attention_mask: np.ndarray  # int64 [N, L]
    precision: str  # "fp16" or "int8"
    scales: np.ndarray | None = None  # float32 [N, L] for int8: value = q * scale
    info: dict[str, Any] = field(default_factory=dict)  # context, padding, weights, storage error
    list_file: str = PROMPTS_FILE  # what error messages call the list

    def __post_init__(self):
        self._index = {p: i for i, p in enumerate(self.prompts)}

    def __len__(self) -> int:
        return len(self.prompts)

    def __contains__(self, prompt: str) -> bool:
        return normalize_prompt(prompt) in self._index

    @property
    def context_length(self) -> int:
        return int(self.features.shape[1])

    def index(self, prompt: str) -> int:
        key = normalize_prompt(prompt)
        if key not in self._index:
            close = difflib.get_close_matches(key, self.prompts, n=3, cutoff=0.6)
            hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
            raise LitetextError(
                f"prompt {prompt!r} is not in this bundle's fixed vocabulary ({self.list_file}, "
                f"{len(self.prompts)} prompts){hint}. Export again with it in the vocabulary, or export a "
                "text_encoder graph for free-form prompts"
            )
        return self._index[key]

    def dequantized(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """float32 features of the rows."""
        f = self.features[rows].astype(np.float32)
        if self.precision == "int8":
            f *= self.scales[rows][..., None]
        return f

    def lookup(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """-> (text_features float32 [1, L, W], attention_mask int64 [1, L]), the heads' text inputs."""
        i = self.index(prompt)
        return self.dequantized(slice(i, i + 1)), self.attention_mask[i : i + 1].astype(np.int64)

    # files --------------------------------------------------------------------------------------------------

    def _npz_bytes(self) -> bytes:
        arrays = {
            "text_features": self.features,
            "attention_mask": self.attention_mask.astype(np.uint8),
            "prompts": np.array(self.prompts, dtype=np.str_),
        }
        if self.scales is not None:
            arrays["scales"] = self.scales.astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write text_features.npz, vocabulary.txt and vocabulary.json into `folder`, each atomically, and
        return the manifest entry (``text_path``) with their sha256."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        npz = self._npz_bytes()
        txt = ("\n".join(self.prompts) + "\n").encode("utf-8")
        entry = {
            "kind": KIND,
            "features_file": FEATURES_FILE,
            "prompts_file": PROMPTS_FILE,
            "prompts": len(self.prompts),
            "storage": self.precision,
            "shape": list(self.features.shape),
            "scales": "per prompt and token, symmetric, value = q * scale" if self.precision == "int8" else None,
            "normalization": "litetext.tokenizer.clean_text (ftfy, HTML unescape, whitespace collapsed, lower)",
            "bytes": len(npz) + len(txt),
            "sha256": {FEATURES_FILE: _sha256(npz), PROMPTS_FILE: _sha256(txt)},
            **self.info,
        }
        _write_atomic(folder / FEATURES_FILE, npz)
        _write_atomic(folder / PROMPTS_FILE, txt)
        _write_atomic(folder / META_FILE, (json.dumps(entry, indent=2) + "\n").encode("utf-8"))
        return entry

    @classmethod
    def load(cls, folder: str | Path, entry: dict[str, Any] | None = None) -> "FixedVocabulary":
        """Read a saved vocabulary; `entry` (the manifest's text_path) defaults to vocabulary.json. Checks the
        content hashes and that the list file matches the stored features."""
        folder = Path(folder)
        if entry is None:
            meta = folder / META_FILE
            if not meta.is_file():
                raise LitetextError(f"{folder} has no fixed vocabulary ({META_FILE} is missing)")
            entry = json.loads(meta.read_text(encoding="utf-8"))
        files = {}
        for name in (entry.get("features_file", FEATURES_FILE), entry.get("prompts_file", PROMPTS_FILE)):
            path = folder / name
            if not path.is_file():
                raise LitetextError(f"{folder} is incomplete: fixed vocabulary file {name} is missing")
            data = path.read_bytes()
            want = entry.get("sha256", {}).get(name)
            if want is not None and _sha256(data) != want:
                raise LitetextError(f"{path} does not match its sha256 in the manifest: the file was changed or "
                                    "damaged; export the bundle again")
            files[name] = data
        npz_name, txt_name = entry.get("features_file", FEATURES_FILE), entry.get("prompts_file", PROMPTS_FILE)
        with np.load(io.BytesIO(files[npz_name]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        prompts = [str(p) for p in arrays["prompts"]]
        listed = files[txt_name].decode("utf-8").split("\n")[:-1]
        if listed != prompts:
            raise LitetextError(f"{folder / txt_name} does not list the prompts stored in {npz_name}")
        info = {k: v for k, v in entry.items() if k in ("context_length", "text_padding", "weights_label",
                                                         "storage_error")}
        return cls(prompts, arrays["text_features"], arrays["attention_mask"].astype(np.int64), entry["storage"],
                   arrays.get("scales"), info, list_file=str(folder / txt_name))


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


def text_path_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's text_path; bundles written before it existed have a text_encoder graph."""
    return manifest.get("text_path") or {"kind": "text_encoder"}


def fixed_vocabulary_size_bytes(prompts: int, context_length: int, width: int, precision: str = "fp16") -> int:
    """Bytes of the stored arrays (features, mask, int8 scales), from shapes alone."""
    per_value = {"fp16": 2, "int8": 1}[precision]
    n = prompts * context_length
    return n * width * per_value + n + (4 * n if precision == "int8" else 0)


# Pruned token table ------------------------------------------------------------------------------------------

SPECIAL_IDS = (0, 49406, 49407)  # the upstream pad (0, also a byte token), start, end


@dataclass
class PrunedVocabulary:
    """A kept subset of CLIP's 49,408 tokens and the merges that build them."""

    kept_ids: np.ndarray  # int64 [K], old ids, ascending; new id = position
    corpus_tokens: int = 0  # distinct tokens the corpus used

    def __post_init__(self):
        from litetext.tokenizer import VOCAB_SIZE

        self.kept_ids = np.asarray(self.kept_ids, dtype=np.int64)
        if (np.diff(self.kept_ids) <= 0).any():
            raise ValueError("kept_ids must be strictly ascending")
        self.old_to_new = np.full(VOCAB_SIZE, -1, dtype=np.int64)
        self.old_to_new[self.kept_ids] = np.arange(len(self.kept_ids))
        self._kept = set(self.kept_ids.tolist())

    def __len__(self) -> int:
        return len(self.kept_ids)

    def remap(self, old_ids: np.ndarray) -> np.ndarray:
        """Old ids -> new ids; a LitetextError if any is not kept."""
        new = self.old_to_new[np.asarray(old_ids)]
        if (new < 0).any():
            raise LitetextError("token ids outside the pruned vocabulary; tokenize with the pruned tokenizer.json")
        return new

    def covers(self, prompt: str, tokenizer=None) -> bool:
        """True when every token of the prompt's full tokenization is kept: then the pruned tokenizer and
        text encoder give exactly the unpruned features."""
        from litetext.tokenizer import ClipTokenizer

        tokenizer = tokenizer or ClipTokenizer()
        return all(i in self._kept for i in tokenizer.encode(prompt))

    def coverage(self, prompts: Sequence[str]) -> float:
        from litetext.tokenizer import ClipTokenizer

        tok = ClipTokenizer()
        return float(np.mean([self.covers(p, tok) for p in prompts])) if prompts else 1.0

    def merges(self) -> list[tuple[str, str]]:
        """The kept merges, in rank order: those whose output token is kept."""
        from litetext.tokenizer import load_merges, load_vocab

        vocab = load_vocab()
        return [(a, b) for a, b in load_merges() if vocab[a + b] in self._kept]

    def tokenizer_json(self, context_length: int, pad_id: int = 0) -> str:
        """The bundle's tokenizer.json (`pad_id` in OLD ids, as the manifest's padding says) with the kept
        vocabulary and merges and the NEW ids everywhere."""
        from litetext.tokenizer import _tokenizer_json, load_vocab

        if pad_id not in self._kept:
            raise LitetextError(f"pad id {pad_id} is not in the pruned vocabulary")
        data = json.loads(_tokenizer_json(context_length, pad_id))
        tokens = {i: t for t, i in load_vocab().items()}
        data["model"]["vocab"] = {tokens[int(old)]: new for new, old in enumerate(self.kept_ids)}
        data["model"]["merges"] = [[a, b] for a, b in self.merges()]
        new = lambda old: int(self.old_to_new[old])  # noqa: E731
        for added in data.get("added_tokens", []):
            added["id"] = new(added["id"])
        for special in data["post_processor"].get("special_tokens", {}).values():
            special["ids"] = [new(i) for i in special["ids"]]
        if data.get("padding"):
            data["padding"]["pad_id"] = new(data["padding"]["pad_id"])
        return json.dumps(data, ensure_ascii=False, indent=2)

    def write_tokenizer_json(self, path: str | Path, context_length: int, pad_id: int = 0) -> None:
        _write_atomic(Path(path), self.tokenizer_json(context_length, pad_id).encode("utf-8"))

    def to_json(self) -> dict[str, Any]:
        return {"kept_ids": self.kept_ids.tolist(), "corpus_tokens": self.corpus_tokens,
                "rule": "corpus tokens + specials + 512 byte tokens + merge ancestors; merges whose output is kept"}

    def save(self, path: str | Path) -> None:
        _write_atomic(Path(path), json.dumps(self.to_json()).encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> "PrunedVocabulary":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(np.array(data["kept_ids"], dtype=np.int64), int(data.get("corpus_tokens", 0)))


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


def _token_table_names(model, vocab_size: int) -> list[str]:
    """Initializers indexed by token id: first axis vocab_size and read by a Gather on axis 0 (directly, or
    through DequantizeLinear / Cast)."""
    inits = {t.name: t for t in model.graph.initializer}
    produced_by = {o: n for n in model.graph.node for o in n.output}
    names = []
    for node in model.graph.node:
        if node.op_type != "Gather" or any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        src = node.input[0]
        seen = [src]
        while src not in inits and src in produced_by and produced_by[src].op_type in ("DequantizeLinear", "Cast"):
            src = produced_by[src].input[0]
            seen.append(src)
        if src in inits and inits[src].dims and inits[src].dims[0] == vocab_size:
            names.append(src)
    return names


def count_parameters(model) -> int:
    """Elements of all initializers of an ONNX model."""
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))


def prune_onnx_text_encoder(src: str | Path, dst: str | Path, pruned: PrunedVocabulary) -> dict[str, Any]:
    """Copy an exported text_encoder ONNX with its token table sliced to the kept rows (ids become the new
    ids). Works on fp32, fp16 and int8 exports (the table read through Cast / DequantizeLinear). Returns
    {"parameters_before", "parameters_after", "ratio", "table_rows"}. A table quantized with one scale per
    token is refused. Models over 2 GiB (external data) are not handled."""
    import onnx
    from onnx import numpy_helper

    from litetext.export.onnx import save
    from litetext.tokenizer import VOCAB_SIZE

    model = onnx.load(str(src))
    names = _token_table_names(model, VOCAB_SIZE)
    if len(names) != 1:
        raise LitetextError(f"{src}: expected one token table initializer ([{VOCAB_SIZE}, D] read by a Gather), "
                            f"found {len(names)}")
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == names[0]:
            inits = {t.name: t for t in model.graph.initializer}
            if any(i in inits and inits[i].dims and inits[i].dims[0] == VOCAB_SIZE for i in node.input[1:]):
                raise LitetextError(f"{src}: the token table is quantized per token; prune the fp32 export")
    before = count_parameters(model)
    for i, t in enumerate(model.graph.initializer):
        if t.name == names[0]:
            table = numpy_helper.to_array(t)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(table[pruned.kept_ids]),
                                                                        t.name))
    after = count_parameters(model)
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.partial.onnx")
    try:
        save(model, tmp)
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return {"parameters_before": before, "parameters_after": after, "ratio": after / before,
            "table_rows": [VOCAB_SIZE, len(pruned)]}
