"""Reading a bundle: one folder per export, described by manifest.json. Everything that opens a bundle (predict,
bench, check, the Python API) goes through `Bundle.open`; what writes bundles (litetext.export) sits above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litetext import bundle_check
from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec, TensorSpec, TextPadding, Tolerance

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT_VERSION = bundle_check.FORMAT_VERSION


@dataclass
class Bundle:
    """An exported bundle opened for use: its manifest, graph descriptions and files."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, verify: bool = False) -> "Bundle":
        """Open a bundle after checking it as untrusted input (litetext.bundle_check): the manifest's schema,
        every file it names inside the folder, tokenizer.json against the manifest, and with `verify` the
        sha256 of every file the manifest lists."""
        path = Path(path)
        return cls(path, bundle_check.check_bundle_folder(path, verify))

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
        # runner_dtype: what litetext's runners take where the artifact takes another type (Core ML: int32 ids)
        tensors = lambda items: tuple(TensorSpec(t["name"], t.get("runner_dtype", t["dtype"]), tuple(t["shape"]))  # noqa: E731
                                      for t in items)
        tolerance = {k: Tolerance(**v) for k, v in g.get("tolerance", {}).items()}
        return GraphSpec(graph, tensors(g["inputs"]), tensors(g["outputs"]), tolerance)

    def files_of(self, graph: str) -> list[Path]:
        """The files a graph consists of: the graph file and its external weights (`<file>.data`), or every
        file of a package folder (Core ML)."""
        self.spec(graph)  # a clear error for a graph the bundle lacks
        path = self.path / self.manifest["graphs"][graph]["file"]
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file())
        data = path.with_name(path.name + ".data")
        return [path, data] if data.exists() else [path]

    def runner(self, graph: str):
        from litetext.runtimes.by_target import open_runner

        return open_runner(self.manifest["target"], self.path / self.manifest["graphs"][graph]["file"],
                           self.spec(graph), self.manifest["precision"])

    def tokenizer(self) -> "BoundTokenizer":
        """What gives this bundle's text encoder its ids, bound to the bundle's context length and pad id
        (`bundle.tokenizer()(prompts)`; both may still be passed): ClipTokenizer, or for a pruned text encoder
        the bundle's own tokenizer.json (NEW ids, litetext.vocabulary.PrunedTokenizer)."""
        from litetext.tokenizer import ClipTokenizer
        from litetext.vocabulary.stored import PRUNED_KIND, PrunedTokenizer, text_path_of

        text_path = text_path_of(self.manifest)
        inner = PrunedTokenizer.load(self.path, text_path) if text_path["kind"] == PRUNED_KIND else ClipTokenizer()
        return BoundTokenizer(inner, self.context_length, self.text_padding.pad_id)


@dataclass
class BoundTokenizer:
    """A tokenizer with a bundle's context length and pad id as defaults."""

    tokenizer: Any  # ClipTokenizer or PrunedTokenizer
    context_length: int
    pad_id: int

    def __call__(self, texts, context_length: int | None = None, pad_id: int | None = None):
        return self.tokenizer(texts, context_length or self.context_length,
                              self.pad_id if pad_id is None else pad_id)

    def __getattr__(self, name):  # the wrapped tokenizer's other members (vocabulary, encode, ...)
        return getattr(self.tokenizer, name)
