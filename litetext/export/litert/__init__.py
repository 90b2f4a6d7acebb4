"""LiteRT target (Android): .tflite graphs converted with litert-torch, run and checked here in the ai-edge-litert
interpreter with XNNPACK, as an Android app runs them on its CPU.

- Static shapes: each graph is converted at one batch size (option `batch`, default 1); the runner feeds
  larger batches in chunks. Token ids are int32 inside the graph.
- Text input (option `text_input`): "ids" keeps the token table inside the graph (EMBEDDING_LOOKUP);
  "embeddings" ships it beside the graph as a plain array (`text_encoder.tokens.npy`, fp32 / fp16 / int8 with
  per-row scales, following the precision) and the graph takes looked-up embeddings, as Google's SAM3 LiteRT
  sample does for the GPU delegate. Students only; pruned tables (--prune-vocabulary) work with both forms.
- Precisions: fp32; fp16 (weights only, fp32 compute); int8 (ai-edge-quantizer static: int8 weights AND
  activations, calibrated on the same real feeds as the other targets) on the weighted ops (option
  `int8_ops="matmul"`, default: float in and out, norms and softmax fp32, as the ONNX target) or on every op
  (`"all"`: what an NPU runs whole; int8 inputs and outputs, less accurate: benchmarks/litert_text_encoder.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec
from litetext.runtimes.litert_runner import TOKEN_SCALES, TOKEN_TABLE, TokenTable

PRECISIONS = ("fp32", "fp16", "int8")
FILE_SUFFIX = ".tflite"
TEXT_INPUTS = ("ids", "embeddings")
EXPORTER = {"converter": "litert-torch (torch.export)", "quantizer": "ai-edge-quantizer", "runtime": "ai-edge-litert"}
CALIBRATION_SAMPLES = 256  # rows the INT8 calibration runs through the float graph


def export_graph(graph: torch.nn.Module, spec: GraphSpec, example: dict, path: Path, precision: str,
                 calibration=None, text_input: str = "ids", batch: int = 1, int8_ops: str = "matmul") -> Path:
    """Convert `graph` (at `batch` rows, static) and write `path`; embeddings-in text encoders write their token
    table beside it. INT8 needs `calibration` (litetext.calibration.int8.Int8Calibration: real feeds)."""
    from litetext.export.litert.convert import INT8_OPS, EmbeddingsIn, convert, graph_example, quantize

    if precision not in PRECISIONS:
        raise LitetextError(f"the litert target exports {', '.join(PRECISIONS)}, not {precision!r}")
    if text_input not in TEXT_INPUTS:
        raise LitetextError(f"text_input is one of {', '.join(TEXT_INPUTS)}, not {text_input!r}")
    if int8_ops not in INT8_OPS:
        raise LitetextError(f"int8_ops is one of {', '.join(INT8_OPS)}, not {int8_ops!r}")
    if batch < 1:
        raise LitetextError(f"batch must be at least 1, not {batch}")
    if precision == "int8" and calibration is None:
        raise LitetextError("int8 export needs calibration prompts")
    table = None
    if spec.name == "text_encoder" and text_input == "embeddings":
        graph = EmbeddingsIn(graph)
        table = TokenTable.quantize(graph.table, precision)
    float_path = path if precision == "fp32" else path.with_name(path.stem + ".float" + FILE_SUFFIX)
    convert(graph, graph_example(spec, example, batch, table), float_path)
    if precision != "fp32":
        feeds = None
        if precision == "int8":
            feeds = _calibration_feeds(spec, calibration.feeds, batch, table)
        report = quantize(float_path, path, precision, feeds, int8_ops)
        float_path.unlink()
        if calibration is not None:
            calibration.report.update(report)
    if table is not None:
        table.save_beside(path)
    return path


def _calibration_feeds(spec: GraphSpec, feeds: list[dict], batch: int, table) -> list[dict]:
    """The calibration feeds cut into the graph's static batch, up to CALIBRATION_SAMPLES rows."""
    from litetext.export.litert.convert import graph_example

    rows = {k: np.concatenate([f[k] for f in feeds])[:CALIBRATION_SAMPLES] for k in spec.input_names}
    n = len(next(iter(rows.values())))
    return [graph_example(spec, {k: v[i : i + batch] for k, v in rows.items()}, batch, table)
            for i in range(0, n, batch)]


def files_of(path: Path) -> list[Path]:
    """The graph, and for an embeddings-in text encoder the token table (and its scales) beside it."""
    extra = [path.with_name(path.stem + suffix) for suffix in (TOKEN_TABLE, TOKEN_SCALES)]
    return [path, *(p for p in extra if p.exists())]


def graph_manifest(path: Path, spec: GraphSpec, precision: str) -> dict:
    """Static batch, text input form and token table, and what the delegates make of the graph."""
    from litetext.export.litert.convert import RECIPES
    from litetext.export.litert.delegates import delegate_report
    from litetext.runtimes.litert_runner import open_interpreter

    interpreter = open_interpreter(path, threads=1)
    runner = interpreter.get_signature_runner("serving_default")
    details = runner.get_input_details()
    io = {**details, **runner.get_output_details()}
    # INT8 graphs take and give int8 tensors: the app converts, real = (q - zero_point) * scale.
    quantized_io = {name: {"dtype": np.dtype(d["dtype"]).name, "scale": float(d["quantization"][0]),
                           "zero_point": int(d["quantization"][1])} for name, d in io.items() if d["quantization"][0]}
    facts = {
        "litert": {
            "precision": RECIPES[precision],
            "static_inputs": {name: [int(d) for d in v["shape"]] for name, v in details.items()},
            "quantized_io": quantized_io,
            "parity_runtime": "ai-edge-litert interpreter, XNNPACK, this machine's CPU",
            # The converter's figure, for the float graph's ops; ai-edge-quantizer leaves it as it was.
            "min_runtime_version": _metadata(path).get("min_runtime_version"),
            "tools": _versions(),
            "delegates": delegate_report(path),
        }
    }
    table = TokenTable.beside(path)
    if table is not None:
        facts["litert"]["token_table"] = {
            "file": path.stem + TOKEN_TABLE,
            "scales": path.stem + TOKEN_SCALES if table.scales is not None else None,
            "dtype": table.dtype,
            "shape": list(table.rows.shape),
            "lookup": "embeddings = rows[input_ids] (int8: times scales[input_ids]), fed as token_embeddings",
        }
    return facts


def _metadata(path: Path) -> dict[str, str]:
    """The flatbuffer's metadata entries (min_runtime_version, ...)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    return {(m.name.decode() if isinstance(m.name, bytes) else m.name):
            bytes(model.buffers[m.buffer].data).rstrip(b"\0").decode(errors="replace") for m in model.metadata or []}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
