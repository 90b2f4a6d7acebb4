"""What a bundle stores for its text path, read back: fixed vocabularies (stored text features and their
lookup) and pruned token tables (the pruned tokenizer). Made by litetext.vocabulary.build; see the package
docstring."""

from __future__ import annotations

import difflib
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from litetext.errors import LitetextError
from litetext.files import write_bytes_atomic

FEATURES_FILE = "text_features.npz"
PROMPTS_FILE = "vocabulary.txt"
META_FILE = "vocabulary.json"
PRUNED_FILE = "pruned_tokens.json"
STORAGE_PRECISIONS = ("fp16", "int8")
KIND = "fixed_vocabulary"


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
        write_bytes_atomic(folder / FEATURES_FILE, npz)
        write_bytes_atomic(folder / PROMPTS_FILE, txt)
        write_bytes_atomic(folder / META_FILE, (json.dumps(entry, indent=2) + "\n").encode("utf-8"))
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
        try:  # the hashes matched, yet a bundle made to mislead can hold anything
            with np.load(io.BytesIO(files[npz_name]), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            prompts = [str(p) for p in arrays["prompts"]]
            listed = files[txt_name].decode("utf-8").split("\n")[:-1]
            arrays["text_features"], arrays["attention_mask"]
        except Exception as e:  # numpy and zipfile raise many types for a damaged file
            raise LitetextError(f"{folder / npz_name} is not a fixed vocabulary's features file: "
                                f"{type(e).__name__}") from None
        if listed != prompts:
            raise LitetextError(f"{folder / txt_name} does not list the prompts stored in {npz_name}")
        info = {k: v for k, v in entry.items() if k in ("context_length", "text_padding", "weights_label",
                                                         "storage_error")}
        return cls(prompts, arrays["text_features"], arrays["attention_mask"].astype(np.int64), entry["storage"],
                   arrays.get("scales"), info, list_file=str(folder / txt_name))


class LookupRunner:
    """A fixed vocabulary behind the runners' contract (infer(feed) -> {"text_features"}), for benchmarks: each
    prompt of the feed's "prompts" is looked up as an app does (cleaned text -> stored row, dequantized)."""

    runtime = "numpy lookup"
    provider = None

    def __init__(self, vocabulary: FixedVocabulary):
        self.vocabulary = vocabulary
        self.precision = vocabulary.precision

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "prompts" not in feed:
            raise LitetextError("a fixed vocabulary is looked up by prompt text: the feed needs its \"prompts\"")
        try:
            rows = [self.vocabulary.lookup(str(p))[0] for p in feed["prompts"]]
        except LitetextError as e:
            raise LitetextError(f"{e}; benchmark it with --prompts {self.vocabulary.list_file}") from None
        return {"text_features": np.concatenate(rows)}

    def close(self) -> None:
        pass


def text_path_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's text_path; bundles written before it existed have a text_encoder graph."""
    return manifest.get("text_path") or {"kind": "text_encoder"}


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
        write_bytes_atomic(Path(path), self.tokenizer_json(context_length, pad_id).encode("utf-8"))

    def to_json(self) -> dict[str, Any]:
        return {"kept_ids": self.kept_ids.tolist(), "corpus_tokens": self.corpus_tokens,
                "rule": "corpus tokens + specials + 512 byte tokens + merge ancestors; merges whose output is kept"}

    def save(self, path: str | Path) -> None:
        write_bytes_atomic(Path(path), json.dumps(self.to_json()).encode("utf-8"))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PrunedVocabulary":
        return cls(np.array(data["kept_ids"], dtype=np.int64), int(data.get("corpus_tokens", 0)))

    @classmethod
    def load(cls, path: str | Path) -> "PrunedVocabulary":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


# Pruned text path in a bundle ---------------------------------------------------------------------------------

PRUNED_KIND = "pruned_text_encoder"


def corpus_sha256(prompts: Sequence[str]) -> str:
    """sha256 of the corpus as read (one prompt a line, UTF-8): names the corpus in the manifest."""
    return _sha256(("\n".join(prompts) + "\n").encode("utf-8"))


class PrunedTokenizer:
    """A pruned tokenizer.json run with the `tokenizers` library, called as ClipTokenizer is: prompts, context
    length and the padding convention's pad id in CLIP's ids (0 or 49407) -> a TokenizedBatch of NEW ids, padded
    with the pad's new id and truncated keeping the end token. What `Bundle.tokenizer()` gives for a pruned
    bundle, so its ids are those an app gets from the bundle's tokenizer.json."""

    def __init__(self, tokenizer_json: str, pruned: PrunedVocabulary):
        from tokenizers import Tokenizer

        self.pruned = pruned
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        if self._tokenizer.get_vocab_size() != len(pruned):
            raise LitetextError(f"the tokenizer.json has {self._tokenizer.get_vocab_size()} tokens, the pruned "
                                f"vocabulary {len(pruned)}: they are from different exports; export the bundle again")

    @classmethod
    def load(cls, folder: str | Path, entry: dict[str, Any]) -> "PrunedTokenizer":
        """The tokenizer of a pruned bundle; checks both files against their sha256 in the manifest."""
        folder = Path(folder)
        data = {}
        for key in ("tokenizer_file", "pruned_tokens_file"):
            path = folder / entry[key]
            if not path.is_file():
                raise LitetextError(f"{folder} is incomplete: {entry[key]} of its pruned text encoder is missing")
            data[key] = path.read_bytes()
            if _sha256(data[key]) != entry["sha256"][entry[key]]:
                raise LitetextError(f"{path} does not match its sha256 in the manifest: the file was changed or "
                                    "damaged; export the bundle again")
        try:  # the hashes matched, yet a bundle made to mislead can hold anything
            pruned = PrunedVocabulary.from_json(json.loads(data["pruned_tokens_file"]))
            return cls(data["tokenizer_file"].decode("utf-8"), pruned)
        except LitetextError:
            raise
        except Exception as e:  # json, numpy and tokenizers raise many types for a damaged file
            raise LitetextError(f"{folder} holds a damaged pruned tokenizer ({type(e).__name__}); export the bundle "
                                "again") from None

    def __call__(self, texts: str | Sequence[str], context_length: int, pad_id: int = 0):
        import warnings

        from litetext.tokenizer import TokenizedBatch, TruncationWarning

        if isinstance(texts, str):
            texts = [texts]
        pad = int(self.pruned.remap(np.array([pad_id]))[0])
        tok = self._tokenizer
        tok.enable_truncation(context_length)  # room for the start and end tokens the post-processor adds
        tok.enable_padding(length=context_length, pad_id=pad, pad_token=tok.id_to_token(pad))
        encodings = tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), context_length)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(ids.shape)
        lengths = mask.sum(1)
        empty = np.flatnonzero(lengths <= 2)
        if empty.size:
            row = int(empty[0])
            raise LitetextError(f"prompt {row} ({texts[row]!r}) is empty after cleaning; remove it or give it text")
        truncated = np.array([bool(e.overflowing) for e in encodings])
        if truncated.any():
            warnings.warn(f"{truncated.sum()} of {len(texts)} prompts are longer than context_length={context_length} "
                          "and were truncated (end token kept last)", TruncationWarning, stacklevel=2)
        return TokenizedBatch(ids, mask, lengths, truncated)

    def compare(self, prompts: Sequence[str], context_length: int, pad_id: int):
        """-> (CLIP's TokenizedBatch, this tokenizer's, covered [N] bool): covered prompts have every token kept
        and this tokenizer's ids equal CLIP's remapped (the pruned text encoder then computes exactly the
        unpruned features). The second check only fails where tokenizer.json's cleaning differs from
        litetext's (see litetext.tokenizer.write_tokenizer_json), never because of the pruning."""
        import warnings

        from litetext.tokenizer import ClipTokenizer

        tok = ClipTokenizer()
        full = tok(list(prompts), context_length=context_length, pad_id=pad_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CLIP's tokenization above already warned about long prompts
            new = self(list(prompts), context_length, pad_id)
        kept = np.array([self.pruned.covers(p, tok) for p in prompts], dtype=bool)
        same = (self.pruned.old_to_new[full.input_ids] == new.input_ids).all(1)
        return full, new, kept & same


