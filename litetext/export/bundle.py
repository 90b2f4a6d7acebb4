"""The bundle: one folder per export, written atomically, described by manifest.json.

A bundle is built in a hidden temporary folder beside OUT and renamed into place only when everything in it
has been written and checked, so a failed, interrupted or out-of-space export leaves nothing at OUT.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litetext.errors import LitetextError
from litetext.files import write_bytes_atomic
from litetext.models.graphs import GraphSpec, TensorSpec, TextPadding, Tolerance

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT_VERSION = 1


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))


class BundleWriter:
    """Context manager: `with BundleWriter(out, force) as tmp:` write into `tmp`; on success it becomes `out`."""

    def __init__(self, out: str | Path, force: bool = False):
        self.out = Path(out).absolute()
        self.force = force
        self.tmp: Path | None = None
        if self.out.exists() and not force:
            raise LitetextError(f"{self.out} already exists; pass --force to replace it")
        if self.out.exists() and not (self.out / MANIFEST).is_file() and any(self.out.iterdir()):
            # Never delete a folder litetext did not make, --force or not.
            raise LitetextError(f"{self.out} exists and is not a litetext bundle; choose another output folder")

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._remove_orphans()
        self.tmp = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.partial-{os.getpid()}-"))
        os.chmod(self.tmp, 0o755)  # mkdtemp's 0700 would make the bundle private once renamed into place
        return self.tmp

    def _remove_orphans(self) -> None:
        """A process killed outright (out of memory, SIGKILL) cannot clean up: remove the partial folders of
        exports to this OUT whose process no longer runs."""
        for partial in self.out.parent.glob(f".{self.out.name}.partial-*"):
            pid = partial.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(partial, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise LitetextError(
                    f"no space left on the device while writing {self.out}; nothing was written. "
                    "Free some space or choose another output folder"
                ) from None
            return False
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Bundle:
    """An exported bundle opened for use: its manifest, graph descriptions and files."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "Bundle":
        path = Path(path)
        manifest_file = path / MANIFEST
        if not manifest_file.is_file():
            raise LitetextError(f"{path} is not a litetext bundle (no {MANIFEST}); make one with litetext export")
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LitetextError(f"{manifest_file} is not valid JSON: {e}") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise LitetextError(
                f"{path} has bundle format {manifest.get('format_version')}, this litetext reads {FORMAT_VERSION}"
            )
        for name, graph in manifest["graphs"].items():
            if not (path / graph["file"]).exists():  # a Core ML graph is a folder (.mlpackage)
                raise LitetextError(f"{path} is incomplete: graph {name} file {graph['file']} is missing")
        return cls(path, manifest)

    @property
    def graphs(self) -> list[str]:
        return list(self.manifest["graphs"])

    @property
    def context_length(self) -> int:
        return int(self.manifest["context_length"])

    @property
    def text_padding(self) -> TextPadding:
        p = self.manifest["text_padding"]
        return TextPadding(p["name"], int(p["pad_id"]), bool(p["attention_masked"]))

    def spec(self, graph: str) -> GraphSpec:
        if graph not in self.manifest["graphs"]:
            raise LitetextError(f"{self.path} has no {graph} graph (it has {', '.join(self.graphs)})")
        g = self.manifest["graphs"][graph]
        tensors = lambda items: tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in items)  # noqa: E731
        tolerance = {k: Tolerance(**v) for k, v in g.get("tolerance", {}).items()}
        return GraphSpec(graph, tensors(g["inputs"]), tensors(g["outputs"]), tolerance)

    def runner(self, graph: str):
        from litetext.export import target_module

        target = target_module(self.manifest["target"])
        return target.open_runner(self.path / self.manifest["graphs"][graph]["file"], self.spec(graph),
                                  self.manifest["precision"])

    def tokenizer(self):
        """What gives this bundle's text encoder its ids, called as ClipTokenizer is (prompts, context length,
        the padding's pad id): ClipTokenizer, or for a pruned text encoder the bundle's own tokenizer.json
        (NEW ids, litetext.vocabulary.PrunedTokenizer)."""
        from litetext.tokenizer import ClipTokenizer
        from litetext.vocabulary import PRUNED_KIND, PrunedTokenizer, text_path_of

        text_path = text_path_of(self.manifest)
        if text_path["kind"] == PRUNED_KIND:
            return PrunedTokenizer.load(self.path, text_path)
        return ClipTokenizer()
