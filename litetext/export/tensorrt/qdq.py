"""fp16 graphs for TensorRT, and explicit INT8: symmetric Q/DQ on the inputs of Conv / Gemm / MatMul, calibrated on real data,
and the calibration cache implicit INT8 (TensorRT <= 10) reads."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.export.tensorrt.options import CACHE_TENSORRT_VERSION, OPSET, QUANTIZED_OPS
from litetext.models.graphs import GraphSpec
from litetext.runtimes.tensorrt_engine import drop_unused_initializers, tensorrt_version_int


def quantize_for_tensorrt(fp32_path: Path, spec: GraphSpec, calibration):
    """Calibrate, quantize to TensorRT's Q/DQ flavour, convert to fp16; if the calibration prompts miss the target,
    keep the most sensitive layers unquantized (measured on the calibration prompts only). Returns the ranges, the
    model and a report."""
    import onnx

    from litetext.calibration.int8 import METHODS, calibrate_ranges, layer_group
    from litetext.calibration.search import keep_most_sensitive

    # Every float tensor: the calibration cache for implicit INT8 (TensorRT <= 10) needs them all.
    ranges = calibrate_ranges(fp32_path, calibration.feeds, calibration.method)
    fp32 = onnx.load(str(fp32_path))
    quantizable = [n for n in fp32.graph.node if n.op_type in QUANTIZED_OPS]
    groups = sorted({layer_group(n.name) for n in quantizable})

    def build(exclude_groups):
        excluded = [n.name for n in quantizable if layer_group(n.name) in exclude_groups]
        return qdq_model(fp32_path, ranges, excluded)

    def figures_keeping(kept: list[str]) -> dict:
        return _calibration_parity(fp32_path, build(kept), spec, calibration.feeds)

    def error_alone(group: str) -> float:  # that group alone INT8, on the ranking feeds
        alone = build([g for g in groups if g != group])
        return 1.0 - _calibration_parity(fp32_path, alone, spec, calibration.feeds[: calibration.ranking_feeds])["cosine_mean"]

    found = keep_most_sensitive(groups, figures_keeping, error_alone, calibration.met_by)
    kept, figures, sensitivity = found.kept, found.figures, found.sensitivity
    model = build(kept)  # built again rather than holding every candidate graph in memory
    counts = qdq_counts(model)
    report = {
        "method": calibration.method,
        "calibrator_options": METHODS[calibration.method][1],
        "flavour": "TensorRT explicit quantization (Q/DQ)",
        "weights": "int8 symmetric per output channel (Conv axis 0, MatMul last axis), zero point 0",
        "activations": "int8 symmetric per tensor, zero point 0, calibrated",
        "not_quantized": "biases, the token table (Gather), normalizations and activations: fp16",
        "scales": "fp16 (opset 19)",
        "calibration_prompts": calibration.prompts,
        "calibration_parity": figures,
        "layers_kept_fp16": kept,
        "layer_sensitivity": sensitivity,
        "qdq_nodes": counts,
    }
    return ranges, model, report


def qdq_model(fp32_path: Path, ranges, exclude_nodes: list[str]):
    """The TensorRT Q/DQ flavour of `fp32_path` with ONNX Runtime's QDQ quantizer: symmetric int8 everywhere, no
    bias or output quantization, Q/DQ kept only where they feed a quantized op; then opset 19 and fp16."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    from litetext.export.onnx import topologically_sorted

    quantizer = QDQQuantizer(
        load_model_with_shape_infer(Path(fp32_path)), True, False, QuantType.QInt8, QuantType.QInt8, ranges,
        [], exclude_nodes, list(QUANTIZED_OPS),
        {
            "WeightSymmetric": True,
            "ActivationSymmetric": True,
            "QuantizeBias": False,
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
            "DedicatedQDQPair": True,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantizer.quantize_model()
    model = _keep_qdq_on_quantized_inputs(topologically_sorted(quantizer.model.model))
    return to_tensorrt_fp16(model)


def _keep_qdq_on_quantized_inputs(model):
    """ONNX Runtime hands the dequantized tensor to every consumer of a quantized activation (Shape, Add,
    BatchNormalization...). TensorRT wants the DequantizeLinear on the quantized op's input only: the other
    consumers read the original tensor again, and Q/DQ left without consumers are removed."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        for consumer in graph.node:
            if consumer.op_type in QUANTIZED_OPS:
                continue
            for i, name in enumerate(consumer.input):
                if name == dq.output[0]:
                    consumer.input[i] = q.input[0]
        for out in graph.output:
            if out.name == dq.output[0]:
                raise LitetextError(f"quantizer made the graph output {out.name} a dequantized tensor")
    for op in ("DequantizeLinear", "QuantizeLinear"):
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        keep = [n for n in graph.node if not (n.op_type == op and n.output[0] not in used)]
        del graph.node[:]
        graph.node.extend(keep)
    drop_unused_initializers(graph)
    return model


def qdq_counts(model) -> dict[str, int]:
    inits = {t.name for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    return {
        "QuantizeLinear": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
        "DequantizeLinear_weights": sum(n.input[0] in inits for n in dq),
        "DequantizeLinear_activations": sum(n.input[0] not in inits for n in dq),
        "quantized_ops": len({c.name for c in model.graph.node for n in dq if n.output[0] in c.input}),
    }


def _input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def _calibration_parity(fp32_path: Path, candidate, spec: GraphSpec, feeds) -> dict[str, float]:
    import onnxruntime as ort

    from litetext.calibration.parity import merge_parity, tensor_parity

    options = ort.SessionOptions()
    options.log_severity_level = 3
    reference = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    model = ort.InferenceSession(candidate.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in reference.get_inputs()]
    first = spec.output_names[0]
    parts = []
    for feed in feeds:
        run = {k: feed[k] for k in inputs}
        want, got = reference.run([first], run)[0], model.run([first], run)[0]
        parts.append(tensor_parity(want, got, feed.get("attention_mask"), per_token=first == "text_features"))
    return merge_parity(parts)


def write_calibration_cache(path: Path, ranges: dict[str, float], tensorrt_version: str = CACHE_TENSORRT_VERSION,
                            algorithm: str = "EntropyCalibration2") -> str:
    """TensorRT's calibration cache: a header `TRT-<version>-<algorithm>`, then `name: <scale>` per tensor, the scale
    (amax / 127) written as the 8 hex digits of its float32 bits. TensorRT reads it back as a dynamic range of
    +-127 * scale. The header must name the installed TensorRT and the calibrator that reads the cache (trtexec's
    --calib reads it with an entropy-2 calibrator). Returns the header."""
    header = f"TRT-{tensorrt_version_int(tensorrt_version)}-{algorithm}"
    lines = [header]
    for name, amax in ranges.items():
        if not np.isfinite(amax) or amax <= 0:
            continue
        bits = struct.unpack(">I", struct.pack(">f", float(amax) / 127.0))[0]
        lines.append(f"{name}: {bits:08x}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")
    return header


def ranges_amax(ranges) -> dict[str, float]:
    """{tensor: max(|min|, |max|)} from ONNX Runtime's calibration result."""
    out = {}
    for name, data in ranges.data.items() if hasattr(ranges, "data") else ranges.items():
        values = getattr(data, "range_value", data)
        low, high = (float(np.asarray(v).reshape(-1)[0]) for v in values[:2])
        out[name] = max(abs(low), abs(high))
    return out


def to_tensorrt_fp16(model):
    """fp32 graph -> opset 19, fp16 weights and compute, fp32 inputs and outputs, topologically sorted."""
    from litetext.export.onnx import to_fp16

    return to_fp16(_to_opset(model, OPSET))



def _to_opset(model, opset: int):
    from onnx import version_converter

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current == opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:  # the converter raises plain RuntimeErrors naming the op it cannot adapt
        raise LitetextError(f"cannot convert the graph from opset {current} to {opset}: {str(e).splitlines()[0]}") from None
