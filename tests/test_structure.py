"""The package's shape: imports (function bodies included) form no cycle and point down the layers, and no
module grows past MAX_LINES. See docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "litetext"
MAX_LINES = 500

# Layers, lowest first: a module may import its own layer and those below, never one above.
LAYERS = [
    # image decoding and resizing (numpy, PIL): the stress initialisation reads photos with them
    ("litetext.errors", "litetext.files", "litetext.onnx_graph", "litetext.image_resize", "litetext.calibration.images"),
    ("litetext.models",),
    ("litetext.tokenizer", "litetext.postprocess"),
    ("litetext.runtimes",),
    ("litetext.vocabulary.stored", "litetext.bundle", "litetext.bundle_check"),
    ("litetext.calibration", "litetext.vocabulary", "litetext.vocabulary.build"),
    ("litetext.export",),
    ("litetext.predict", "litetext.benchmarks", "litetext.analysis", "litetext.distill"),
    # the command line: one module per command group, the table in litetext.cli
    ("litetext.cli", "litetext.cli_helpers", "litetext.cli_checks", "litetext.tensorrt_cli", "litetext.analysis.cli", "litetext.benchmarks.cli",
     "litetext.distill.cli", "litetext"),
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """litetext modules `path` imports anywhere (module level or inside functions). `from pkg import sub` counts
    as importing `pkg.sub` (the parent package is imported first either way)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("litetext"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("litetext"))
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def layer_of(module: str) -> int:
    """The layer of the longest listed name that is `module` or a package above it."""
    best, depth = None, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return best


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def test_the_cycle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_point_down():
    upward = [f"{m} ({layer_of(m)}) -> {t} ({layer_of(t)})" for m, targets in import_graph().items()
              for t in targets if layer_of(t) > layer_of(m) and not t.startswith(m + ".")]
    assert upward == [], "imports pointing up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by job (docs/architecture.md)"
