"""Calibration sets: real prompts (and images) chosen once, tokenized, hashed and saved, so that INT8
calibration for every target, and the benchmarks, use the same data.

A set is an .npz file: token arrays plus a JSON header (prompts, image paths with their sha256, context length,
padding, seed) and a content hash over all of it, checked on load.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.files import sha256_of, write_atomic

FORMAT = "litetext-calibration-set/1"
DEFAULT_COUNT = 256
BATCH = 16


@dataclass
class CalibrationSet:
    prompts: list[str]
    context_length: int
    pad_id: int
    input_ids: np.ndarray  # int64 [N, L]
    attention_mask: np.ndarray  # int64 [N, L]
    images: list[dict] = field(default_factory=list)  # {"path", "sha256"}
    seed: int = 0
    source_prompts: int = 0  # how many prompts the set was drawn from

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(self._header(with_hash=False), sort_keys=True).encode())
        digest.update(np.ascontiguousarray(self.input_ids).tobytes())
        digest.update(np.ascontiguousarray(self.attention_mask).tobytes())
        return digest.hexdigest()

    def text_feeds(self, batch: int = BATCH) -> list[dict[str, np.ndarray]]:
        from litetext.tokenizer import text_feeds

        return text_feeds(self.input_ids, self.attention_mask, batch)

    def _header(self, with_hash: bool = True) -> dict:
        header = {
            "format": FORMAT, "prompts": self.prompts, "context_length": self.context_length,
            "pad_id": self.pad_id, "images": self.images, "seed": self.seed, "source_prompts": self.source_prompts,
        }
        if with_hash:
            header["content_hash"] = self.content_hash
        return header

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: np.savez(f, input_ids=self.input_ids, attention_mask=self.attention_mask,
                                              header=np.array(json.dumps(self._header()))))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationSet":
        path = Path(path)
        if not path.is_file():
            raise LitetextError(f"calibration set {path} does not exist; make one with litetext calibrate")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                ids, mask = data["input_ids"], data["attention_mask"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise LitetextError(f"{path} is not a litetext calibration set: {reason}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            found = header.get("format") if isinstance(header, dict) else type(header).__name__
            raise LitetextError(f"{path} has format {found!r}, litetext reads {FORMAT}")
        try:
            loaded = cls(header["prompts"], header["context_length"], header["pad_id"], ids, mask, header["images"],
                         header["seed"], header["source_prompts"])
            same = loaded.content_hash == header["content_hash"]
            paths_ok = all(isinstance(i["path"], str) and isinstance(i["sha256"], str) for i in loaded.images)
        except (KeyError, TypeError, ValueError):
            raise LitetextError(f"calibration set {path} is damaged (its header lacks or mistypes a field); make it "
                                "again with litetext calibrate") from None
        if not same or not paths_ok:
            raise LitetextError(f"calibration set {path} does not match its content hash: it was changed or is corrupt")
        return loaded

    def summary(self) -> dict:
        return {"prompts": len(self.prompts), "drawn_from": self.source_prompts, "context_length": self.context_length,
                "pad_id": self.pad_id, "images": [Path(i["path"]).name for i in self.images], "seed": self.seed,
                "content_hash": self.content_hash}


def build_calibration_set(prompts: list[str], context_length: int, pad_id: int, images: list[str | Path] = (),
                          count: int = DEFAULT_COUNT, seed: int = 0) -> CalibrationSet:
    """Draw `count` prompts evenly across token lengths (seeded) and tokenize them for the context."""
    from litetext.calibration.data import sample_by_length
    from litetext.tokenizer import ClipTokenizer

    if not prompts:
        raise LitetextError("a calibration set needs prompts; none were given")
    tokenizer = ClipTokenizer()
    lengths = [min(len(tokenizer.encode(p)) + 2, context_length) for p in prompts]
    chosen = sample_by_length(prompts, lengths, count, seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of long calibration prompts is intended: they fill the context
        tokens = tokenizer(chosen, context_length=context_length, pad_id=pad_id)
    image_records = [{"path": str(Path(p).absolute()), "sha256": sha256_of(Path(p))} for p in images]
    return CalibrationSet(chosen, context_length, pad_id, tokens.input_ids, tokens.attention_mask, image_records,
                          seed, len(prompts))


def check_fits(calibration_set: CalibrationSet, context_length: int, pad_id: int) -> None:
    if (calibration_set.context_length, calibration_set.pad_id) != (context_length, pad_id):
        raise LitetextError(
            f"the calibration set was made for context {calibration_set.context_length} and pad id "
            f"{calibration_set.pad_id}, this export uses context {context_length} and pad id {pad_id}; make "
            "another with litetext calibrate --context-length ... --text-padding ..."
        )


__all__ = ["CalibrationSet", "build_calibration_set", "check_fits"]
