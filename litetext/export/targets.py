"""The export targets: a name -> the module that makes its artifacts. Each target is a module or a small package
with the same surface, imported only when that target is asked for:

    PRECISIONS    the precisions it exports
    FILE_SUFFIX   the graph file's suffix (a folder for Core ML)
    export_graph(module, spec, example, path, precision, calibration, **options)
    files_of(path) -> the files the graph consists of

and optionally TOLERANCES (gates of target-only precisions), CALIBRATED_PRECISIONS, EXPORTER (manifest entry),
graph_manifest(path, spec, precision), write_metadata(path, entries), parity_runtime(), and simulated_runner +
can_predict for targets whose runtime is absent here. Which runner opens a target's files is
litetext.runtimes.by_target's. A new target is one module or package, one row here and one row there.
"""

from __future__ import annotations

import importlib

from litetext.errors import LitetextError

TARGETS = {"onnx": "litetext.export.onnx", "tensorrt": "litetext.export.tensorrt", "coreml": "litetext.export.coreml",
           "litert": "litetext.export.litert"}


def target_module(name: str):
    if name not in TARGETS:
        raise LitetextError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[name])
