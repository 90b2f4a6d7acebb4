"""Which runner opens the graph files of each bundle target. A runner's module is imported only when its target
is opened, so a bundle for ONNX Runtime never imports coremltools or tensorrt."""

from __future__ import annotations

import importlib
from pathlib import Path

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec

# target -> (module, callable(path, spec, precision) -> Runner)
RUNNERS = {
    "onnx": ("litetext.runtimes.onnxruntime_runner", "OnnxRuntimeRunner"),
    "tensorrt": ("litetext.runtimes.tensorrt_runner", "open_tensorrt_graph"),  # ONNX Runtime where TensorRT is absent
    "coreml": ("litetext.runtimes.coreml_runner", "CoreMLRunner"),
    "litert": ("litetext.runtimes.litert_runner", "LiteRTRunner"),  # the ai-edge-litert interpreter, XNNPACK
}


def runner_factory(target: str):
    """The callable that opens `target`'s graph files (its module imported now)."""
    if target not in RUNNERS:
        raise LitetextError(f"no runtime here opens bundles for target {target!r}; known: {', '.join(RUNNERS)}")
    module, name = RUNNERS[target]
    return getattr(importlib.import_module(module), name)


def open_runner(target: str, path: str | Path, spec: GraphSpec, precision: str):
    """The runner for one graph file of a bundle made for `target`."""
    return runner_factory(target)(Path(path), spec, precision)
