"""torch -> .tflite with litert-torch, then ai-edge-quantizer for fp16 weights and INT8.

litert-torch (the converter, `litert` extra) pins xdsl, which pins typing-extensions < 4.13 (toolchains.md): it is
imported only here, when a LiteRT export runs, so the interpreter and runners work without it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec, TextEncoderGraph
from litetext.runtimes.litert_runner import EMBEDDINGS_INPUT, SIGNATURE, TokenTable

# What each precision does to the graph (the manifest records it).
RECIPES = {
    "fp32": "float32 weights and compute",
    "fp16": "ai-edge-quantizer FLOAT_CASTING: fp16 weights dequantized to fp32 at load, fp32 compute",
    "int8": "ai-edge-quantizer static int8: int8 per-channel symmetric weights and int8 activations calibrated "
            "with min/max on real feeds; the ids-in token table weight-only int8",
}
# Which ops INT8 quantizes (option int8_ops). "matmul": the weighted ops only, the rest (norms, softmax, GELU,
# residual adds) stays fp32 between QUANTIZE/DEQUANTIZE, as the ONNX target does; "all": every op LiteRT can
# run in int8 (static_wi8_ai8), what an NPU wants whole.
INT8_OPS = {"matmul": ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D"), "all": ("ALL_SUPPORTED",)}


def converter_available() -> bool:
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True


def require_converter():
    try:
        import litert_torch
    except ImportError:
        raise LitetextError(
            "the litert target needs the litert-torch converter: pip install 'litetext[litert]' (its xdsl pins "
            "typing-extensions < 4.13; if that clashes with other packages, use its own environment: toolchains.md, "
            "LiteRT)"
        ) from None
    return litert_torch


class EmbeddingsIn(torch.nn.Module):
    """A student text encoder that takes looked-up token embeddings: the table stays with the app."""

    def __init__(self, graph: torch.nn.Module):
        super().__init__()
        if getattr(graph, "token_embedding", None) is None:
            raise LitetextError("text_input='embeddings' applies to the LiteText students' text encoders, not the "
                                "teacher's CLIP text encoder; export it with text_input='ids'")
        # Only what runs after the lookup: torch.export refuses a module whose unused table it cannot place.
        self.text = torch.nn.Module()
        self.text.layers, self.text.final_layer_norm = graph.text.layers, graph.text.final_layer_norm
        self.projection, self.attention_masked = graph.projection, graph.attention_masked
        self.register_buffer("position_table", graph.position_table, persistent=False)
        self.table = graph.token_embedding.weight.detach().float().numpy().copy()

    def forward(self, token_embeddings, attention_mask=None):
        return TextEncoderGraph.from_embeddings(self, token_embeddings, attention_mask)


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress tree and TensorFlow-style logs; keep the CLI's output readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger().setLevel(level)


@contextlib.contextmanager
def static_feature_size(module: torch.nn.Module):
    """SAM3's DETR decoder reads the feature map's height and width out of a tensor (`.item()` in its relative
    position bias), which torch.export cannot trace. A heads graph's sizes are fixed: while converting, the
    decoder gets them as numbers (those of the last FPN level, the one its encoder attends over)."""
    decoder = getattr(getattr(module, "model", None), "detr_decoder", None)
    if decoder is None or not hasattr(module, "position_2"):
        yield
        return
    original = decoder._get_rpb_matrix
    height, width = (int(d) for d in module.position_2.shape[-2:])
    decoder._get_rpb_matrix = lambda boxes, shape: original(boxes, (height, width))
    try:
        yield
    finally:
        del decoder._get_rpb_matrix  # the instance attribute: the class's method is back


def convert(module: torch.nn.Module, example: dict[str, np.ndarray], path: Path) -> None:
    """Convert `module` at the example's (static) shapes; inputs keep their names through keyword arguments."""
    litert_torch = require_converter()
    kwargs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in example.items()}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet(), torch.no_grad(), static_feature_size(module):
        try:
            edge = litert_torch.convert(module.eval(), sample_args=(), sample_kwargs=kwargs)
        except Exception as e:  # the converter raises torch.export, JAX and MLIR errors alike
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise LitetextError(f"litert-torch cannot convert this graph: {type(e).__name__}: {first}") from None
        edge.export(str(path))


def graph_example(spec: GraphSpec, example: dict[str, np.ndarray], batch: int, table: TokenTable | None):
    """The feed the graph is converted at: `batch` rows, ids as int32, embeddings looked up for embeddings-in."""
    rows = {k: np.concatenate([v] * -(-batch // len(v)))[:batch] for k, v in example.items()}
    feed = {}
    for name in spec.input_names:
        value = rows[name]
        if name == "input_ids" and table is not None:
            feed[EMBEDDINGS_INPUT] = table.lookup(value)
        else:
            feed[name] = value.astype(np.int32) if value.dtype == np.int64 else value
    return feed


def quantize(float_path: Path, path: Path, precision: str, calibration_feeds=None, int8_ops: str = "matmul") -> dict:
    """fp16 weights or INT8 (weights and activations) with ai-edge-quantizer; returns what the manifest keeps."""
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    op = qtyping.TFLOperationName
    q = quantizer.Quantizer(str(float_path))
    report = {"recipe": RECIPES[precision]}
    if precision == "fp16":
        q.add_weight_only_config(regex=".*", operation_name=op.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
        calibration = None
    else:
        if int8_ops not in INT8_OPS:
            raise LitetextError(f"int8_ops is one of {', '.join(INT8_OPS)}, not {int8_ops!r}")
        for name in INT8_OPS[int8_ops]:
            q.add_static_config(regex=".*", operation_name=getattr(op, name), activation_num_bits=8,
                                weight_num_bits=8)
        # Static configs leave EMBEDDING_LOOKUP's table in fp32: 60% of S0 in the ids-in form.
        q.add_weight_only_config(regex=".*", operation_name=op.EMBEDDING_LOOKUP, num_bits=8)
        report["int8_ops"] = f"{int8_ops}: {', '.join(INT8_OPS[int8_ops])}"
        try:
            with _quiet():
                calibration = q.calibrate({SIGNATURE: calibration_feeds}, num_threads=1)
        except RuntimeError as e:  # the interpreter's own errors carry no message (full-size heads at 1008 px)
            raise LitetextError(
                f"ai-edge-quantizer could not calibrate {float_path.name.split('.')[0]} for LiteRT int8: its "
                f"interpreter failed ({str(e) or 'no message'}). The full-size heads at 1008 px fail this way here; "
                "export that graph as LiteRT fp16 or fp32, or as ONNX int8") from None
        report["calibration_samples"] = len(calibration_feeds)
    with _quiet():
        result = q.quantize(calibration)
    path.write_bytes(bytes(result.quantized_model))
    return report
