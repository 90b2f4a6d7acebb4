"""Checks of a bundle someone else made, before anything in it is opened: manifest.json against a schema, every
file it names inside the bundle folder (no `..`, no absolute path, no symlink leaving it, regular files only, so
nothing outside is read and no FIFO blocks a reader), tokenizer.json against the manifest, and on request the
sha256 of every file the manifest lists. Each failure is one LitetextError naming the file and the fault.

What it does not check: that the graphs compute anything sensible (parity needs the weights they came from), and
files changed between this check and their use (a race with another process writing the folder).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from litetext.errors import LitetextError

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 16 << 20  # far above any real manifest (kilobytes); refuses a file meant to exhaust memory
MAX_TOKENIZER_BYTES = 64 << 20  # CLIP's tokenizer.json is 3.6 MB
DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
TEXT_PATH_FILES = {  # text_path kind -> the keys naming its files
    "text_encoder": (),
    "fixed_vocabulary": ("features_file", "prompts_file"),
    "pruned_text_encoder": ("tokenizer_file", "pruned_tokens_file"),
}


# Schema: a type (or tuple), a dict (nested keys, all required unless wrapped in Opt), or one of the classes below.

class Opt:
    def __init__(self, spec):
        self.spec = spec


class ListOf:
    def __init__(self, spec, nonempty: bool = False):
        self.spec, self.nonempty = spec, nonempty


class MapOf:
    def __init__(self, spec):
        self.spec = spec


class OneOf:
    def __init__(self, *values):
        self.values = values


class Count:
    """An int (not a bool) at least `least`."""

    def __init__(self, least: int = 0):
        self.least = least


class Hex64:
    """A sha256 in hex."""


NUMBER = (int, float)
TENSOR = {"name": str, "dtype": OneOf(*DTYPES), "shape": ListOf((Count(0), str))}
TOLERANCE = {"atol": (NUMBER, type(None)), "rtol": NUMBER, "min_cosine": NUMBER, "min_cosine_mean": Opt(NUMBER),
             "min_cosine_worst_1pct": Opt(NUMBER)}
GRAPH = {
    "file": str,
    "inputs": ListOf(TENSOR, nonempty=True),
    "outputs": ListOf(TENSOR, nonempty=True),
    "sha256": Hex64,
    "bytes": Opt(Count(0)),
    "tolerance": Opt(MapOf(TOLERANCE)),
}
SCHEMA = {
    "format_version": int,
    "target": str,
    "precision": str,
    "context_length": Count(3),
    "text_padding": {"name": str, "pad_id": Count(0), "attention_masked": bool},
    "model": {
        "weights": {"kind": str, "seed": Opt(int), "path": Opt(str), "format": Opt(str)},
        "weights_label": str,
        "preset": Opt((str, type(None))),
        "family": Opt((str, type(None))),
    },
    "preprocess": {"image_size": Count(1)},
    "tokenizer": {
        "file": str, "context_length": Count(3), "pad_id": Count(0), "start_id": Count(0), "end_id": Count(0),
        "vocabulary_size": Opt(Count(3)), "sha256": Opt(Hex64),
    },
    "graphs": MapOf(GRAPH),
    "text_path": Opt({"kind": OneOf(*TEXT_PATH_FILES)}),
}
TEXT_PATH = {
    "fixed_vocabulary": {"features_file": str, "prompts_file": str, "storage": OneOf("fp16", "int8"),
                         "sha256": MapOf(Hex64)},
    "pruned_text_encoder": {"tokenizer_file": str, "pruned_tokens_file": str, "sha256": MapOf(Hex64)},
}


def _describe(spec) -> str:
    if isinstance(spec, tuple):
        return " or ".join(_describe(s) for s in spec)
    if spec is Hex64:
        return "a sha256 (64 hex digits)"
    if isinstance(spec, type):
        return {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null",
                list: "a list", dict: "an object"}.get(spec, spec.__name__)
    if isinstance(spec, dict):
        return "an object"
    if isinstance(spec, ListOf):
        return "a non-empty list" if spec.nonempty else "a list"
    if isinstance(spec, MapOf):
        return "an object"
    if isinstance(spec, OneOf):
        return "one of " + ", ".join(map(repr, spec.values))
    if isinstance(spec, Count):
        return f"an integer >= {spec.least}"
    return str(spec)


def _fits(value, spec) -> bool:
    """Whether `value` is of `spec`'s kind (not looking inside containers)."""
    if isinstance(spec, tuple):
        return any(_fits(value, s) for s in spec)
    if spec is Hex64:
        return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    if spec is bool:
        return isinstance(value, bool)
    if spec is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if spec is float:
        return isinstance(value, float) and math.isfinite(value)
    if isinstance(spec, type):
        return isinstance(value, spec)
    if isinstance(spec, (dict, MapOf)):
        return isinstance(value, dict)
    if isinstance(spec, ListOf):
        return isinstance(value, list) and (bool(value) or not spec.nonempty)
    if isinstance(spec, OneOf):
        return isinstance(value, (str, int, float, bool, type(None))) and value in spec.values
    if isinstance(spec, Count):
        return isinstance(value, int) and not isinstance(value, bool) and value >= spec.least
    raise TypeError(spec)


def _short(value) -> str:
    text = json.dumps(value)[:60]
    return text if len(text) < 60 else text[:57] + "..."


def check_schema(value, spec, where: str, file: Path) -> None:
    """Raise one LitetextError at the first place `value` departs from `spec`; `where` is its key path."""
    if isinstance(spec, Opt):
        spec = spec.spec
    if not _fits(value, spec):
        raise LitetextError(f"{file}: {where or 'the top level'} must be {_describe(spec)}, not {_short(value)}")
    if isinstance(spec, dict):
        for key, sub in spec.items():
            if key not in value:
                if isinstance(sub, Opt):
                    continue
                raise LitetextError(f"{file}: {where + '.' if where else ''}{key} is missing")
            check_schema(value[key], sub, f"{where}.{key}" if where else key, file)
    elif isinstance(spec, ListOf):
        for i, item in enumerate(value):
            check_schema(item, spec.spec, f"{where}[{i}]", file)
    elif isinstance(spec, MapOf):
        for key, item in value.items():
            check_schema(item, spec.spec, f"{where}.{key}", file)


def read_json(file: Path, limit: int, what: str) -> Any:
    """A JSON file checked to be a regular file of at most `limit` bytes before it is opened."""
    info = os.stat(file)
    if not stat.S_ISREG(info.st_mode):
        raise LitetextError(f"{file} is not a regular file; {what} must be one")
    if info.st_size > limit:
        raise LitetextError(f"{file} is {info.st_size} bytes, more than a {what} can be ({limit}); it is not one")
    try:
        with open(file, "rb") as f:
            return json.loads(f.read(limit + 1).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise LitetextError(f"{file} is not UTF-8 text ({e.reason} at byte {e.start}); it is not a {what}") from None
    except json.JSONDecodeError as e:
        raise LitetextError(f"{file} is not valid JSON ({e}); it is not a {what}") from None
    except RecursionError:
        raise LitetextError(f"{file} is nested too deeply to be a {what}") from None


def check_manifest(manifest: Any, file: Path) -> None:
    """Types, required keys, format version and the facts that tie the parts together."""
    from litetext.models.graphs import GRAPH_NAMES

    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if _fits(version, int) and version != FORMAT_VERSION:  # a newer or older layout: say so before the details
        raise LitetextError(f"{file.parent} has bundle format {version}, this litetext reads {FORMAT_VERSION}")
    check_schema(manifest, SCHEMA, "", file)
    unknown = [g for g in manifest["graphs"] if g not in GRAPH_NAMES]
    if unknown:
        raise LitetextError(f"{file}: graphs holds {unknown}; a bundle's graphs are {', '.join(GRAPH_NAMES)}")
    if not manifest["graphs"] and "text_path" not in manifest:
        raise LitetextError(f"{file}: the bundle has no graphs and no text path; it holds nothing to run")
    for name, graph in manifest["graphs"].items():
        for precision, tolerance in graph.get("tolerance", {}).items():
            extra = [k for k in tolerance if k not in TOLERANCE]  # Tolerance(**entry) takes no others
            if extra:
                raise LitetextError(f"{file}: graphs.{name}.tolerance.{precision} has unknown keys {extra}")
    tokenizer = manifest["tokenizer"]
    if tokenizer["context_length"] != manifest["context_length"]:
        raise LitetextError(f"{file}: tokenizer.context_length {tokenizer['context_length']} differs from "
                            f"context_length {manifest['context_length']}")
    weights = manifest["model"]["weights"]
    if weights["kind"] == "random" and "seed" not in weights:
        raise LitetextError(f"{file}: model.weights is random but names no seed")
    if weights["kind"] != "random" and "path" not in weights:
        raise LitetextError(f"{file}: model.weights is a {weights['kind']!r} but names no path")
    text_path = manifest.get("text_path") or {"kind": "text_encoder"}
    kind = text_path["kind"]
    if kind in TEXT_PATH:
        check_schema(text_path, TEXT_PATH[kind], "text_path", file)
        for key in TEXT_PATH_FILES[kind]:
            if text_path[key] not in text_path["sha256"]:
                raise LitetextError(f"{file}: text_path.sha256 lacks {text_path[key]} ({key})")


def names_in(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(file name, what it is) for every file the manifest names."""
    text_path = manifest.get("text_path") or {"kind": "text_encoder"}
    named = [(g["file"], f"graph {name}") for name, g in manifest["graphs"].items()]
    named += [(text_path[k], f"text_path {k}") for k in TEXT_PATH_FILES[text_path["kind"]]]
    named.append((manifest["tokenizer"]["file"], "tokenizer file"))
    return list(dict.fromkeys(named))


def inside(root: Path, name: str, what: str, folder_ok: bool = False) -> Path:
    """`root / name` once `name` is shown to be a file of the bundle folder: a plain name (no folder, no `..`,
    not absolute), present, resolving inside `root`, and a regular file (or, with `folder_ok`, a folder whose
    every entry is a regular file or folder inside `root`)."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or name != name.strip())
    if bad:
        raise LitetextError(f"{root / 'manifest.json'}: {what} {name!r} is not a file name inside the bundle "
                            "(no folders, '..' or absolute paths); the manifest was damaged or made to read other files")
    path = root / name
    try:
        info = os.stat(path)  # follows a symlink; never opens, so a FIFO cannot block here
    except FileNotFoundError:
        raise LitetextError(f"{root} is incomplete: {what} {name} is missing") from None
    except OSError as e:  # a name too long, a loop of links
        raise LitetextError(f"{root}: {what} {name[:80]!r} cannot be read: {e.strerror}") from None
    _resolves_inside(root, path, what)
    if stat.S_ISDIR(info.st_mode) and folder_ok:
        for sub in sorted(path.rglob("*")):
            _resolves_inside(root, sub, what)
            if not (sub.is_dir() or stat.S_ISREG(os.stat(sub).st_mode)):
                raise LitetextError(f"{sub} is not a regular file; {what} must consist of regular files")
    elif not stat.S_ISREG(info.st_mode):
        raise LitetextError(f"{path} is not a regular file ({_kind(info.st_mode)}); {what} must be one")
    return path


def _resolves_inside(root: Path, path: Path, what: str) -> None:
    real, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise LitetextError(f"{path} ({what}) leads outside the bundle folder (to {real}); refusing to read it")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_folder(root: Path) -> None:
    """Every entry of the bundle folder is a regular file or folder resolving inside it: files the manifest does
    not name (an ONNX graph's external weights) are read by runtimes too."""
    for entry in sorted(root.rglob("*")):
        if entry.is_symlink():
            _resolves_inside(root, entry, "a link in the bundle")
        mode = os.stat(entry).st_mode if os.path.exists(entry) else None
        if mode is None:
            raise LitetextError(f"{entry} is a broken link; remove it from the bundle")
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise LitetextError(f"{entry} is {_kind(mode)}, not a regular file; remove it from the bundle")


def check_tokenizer(root: Path, manifest: dict[str, Any]) -> None:
    """tokenizer.json agrees with the manifest: vocabulary size, ids 0..N-1, special ids, padding, truncation
    (once per unchanged file in a process)."""
    tok = manifest["tokenizer"]
    file = root / tok["file"]
    info = os.stat(file)
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, json.dumps(tok, sort_keys=True))
    if key in _TOKENIZERS_CHECKED:  # parsing CLIP's 3.6 MB file takes a noticeable fraction of a second
        return
    _check_tokenizer_file(file, tok)
    _TOKENIZERS_CHECKED.add(key)


_TOKENIZERS_CHECKED: set[tuple] = set()


def _check_tokenizer_file(file: Path, tok: dict[str, Any]) -> None:
    from litetext.tokenizer import VOCAB_SIZE

    data = read_json(file, MAX_TOKENIZER_BYTES, "tokenizer.json")
    fault = lambda message: LitetextError(f"{file}: {message}; export the bundle again")  # noqa: E731
    vocab = data.get("model", {}).get("vocab") if isinstance(data, dict) and isinstance(data.get("model"), dict) else None
    if not isinstance(vocab, dict):
        raise fault("no model.vocab object: not a tokenizers file")
    size = tok.get("vocabulary_size", VOCAB_SIZE)
    ids = sorted(v for v in vocab.values() if isinstance(v, int) and not isinstance(v, bool))
    if len(vocab) != size or ids != list(range(size)):
        raise fault(f"its vocabulary has {len(vocab)} tokens (ids not 0..N-1 or not integers) where the manifest "
                    f"says {size}")
    specials = data.get("post_processor", {}).get("special_tokens", {}) if isinstance(
        data.get("post_processor"), dict) else {}
    special_ids = sorted(i for s in specials.values() if isinstance(s, dict) for i in s.get("ids", []))
    if special_ids != sorted([tok["start_id"], tok["end_id"]]):
        raise fault(f"its special token ids {special_ids} are not the manifest's start {tok['start_id']} and "
                    f"end {tok['end_id']}")
    for added in data.get("added_tokens") or []:
        if not isinstance(added, dict) or vocab.get(added.get("content")) != added.get("id"):
            raise fault(f"added token {_short(added)} does not match its vocabulary entry")
    padding, truncation = data.get("padding"), data.get("truncation")
    if not isinstance(padding, dict) or padding.get("pad_id") != tok["pad_id"] or padding.get(
            "strategy") != {"Fixed": tok["context_length"]}:
        raise fault(f"its padding {_short(padding)} is not the manifest's (pad id {tok['pad_id']} to "
                    f"{tok['context_length']} tokens)")
    if not isinstance(truncation, dict) or truncation.get("max_length") != tok["context_length"]:
        raise fault(f"its truncation {_short(truncation)} is not to the manifest's {tok['context_length']} tokens")


def verify_hashes(root: Path, manifest: dict[str, Any]) -> None:
    """The sha256 of every file the manifest lists one for."""
    from litetext.files import sha256_of

    text_path = manifest.get("text_path") or {}
    listed = [(g["file"], g["sha256"], f"graph {name}") for name, g in manifest["graphs"].items()]
    listed += [(name, digest, "text_path file") for name, digest in text_path.get("sha256", {}).items()]
    if "sha256" in manifest["tokenizer"]:
        listed.append((manifest["tokenizer"]["file"], manifest["tokenizer"]["sha256"], "tokenizer file"))
    for name, digest, what in listed:
        path = inside(root, name, what, folder_ok=True)
        if sha256_of(path) != digest:
            raise LitetextError(f"{path} does not match its sha256 in the manifest: the file was changed, swapped or "
                                "damaged; export the bundle again")


def check_bundle_folder(root: Path, verify: bool = False) -> dict[str, Any]:
    """The manifest of the bundle at `root`, once every check above has passed (hashes with `verify`)."""
    if not root.is_dir():
        raise LitetextError(f"{root} is not a litetext bundle (not a folder); make one with litetext export")
    manifest_file = root / "manifest.json"
    if not manifest_file.exists():
        raise LitetextError(f"{root} is not a litetext bundle (no manifest.json); make one with litetext export")
    manifest_file = inside(root, "manifest.json", "the manifest")
    check_folder(root)
    manifest = read_json(manifest_file, MAX_MANIFEST_BYTES, "bundle manifest")
    check_manifest(manifest, manifest_file)
    folders_ok = manifest["target"] == "coreml"  # a Core ML graph is a .mlpackage folder
    for name, what in names_in(manifest):
        inside(root, name, what, folder_ok=folders_ok and what.startswith("graph"))
    check_tokenizer(root, manifest)
    if verify:
        verify_hashes(root, manifest)
    return manifest
