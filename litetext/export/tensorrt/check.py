"""Static checks of ONNX graphs meant for TensorRT's ONNX parser (10.x and 11.x), run without TensorRT.

Two families of problems, each reported with the node it concerns:

- operators the parser does not import (NVIDIA's ONNX-TensorRT operator support matrix, `docs/operators.md` of
  onnx/onnx-tensorrt: the 10.15 table, with the releases that added operators after 10.3, the TensorRT of
  JetPack 6.1/6.2, and after 11.0), ops of non-standard domains, and opsets outside what the parser reads;
- Q/DQ that TensorRT's explicit quantization rejects or cannot fuse: zero points must be 0 and int8 (the parser
  refuses uint8 quantization, and TensorRT quantization is symmetric), no int32 DequantizeLinear (ONNX Runtime's
  int32 bias), activations per tensor, weights per output channel (axis 0 of Conv / ConvTranspose-free Gemm with
  transB=1 weights, the last axis of MatMul weights), and every DequantizeLinear feeding an operator TensorRT runs
  in INT8 from Q/DQ: Conv, Gemm, MatMul, or an Add that joins a residual onto their output or adds two quantized
  tensors (the fusions TensorRT makes); a QuantizeLinear is followed by DequantizeLinear only. Weights are int8
  initializers behind DequantizeLinear, or float initializers behind a Q/DQ pair (TensorRT quantizes them).

    findings = check_model("text_encoder.onnx", versions=(10, 11))
    errors = [f for f in findings if f.severity == "error"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litetext.errors import LitetextError

# ONNX operators (default domain) that ONNX-TensorRT 10.15 imports ("Y" in its support matrix).
SUPPORTED = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow
Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# Operators the matrix lists as not supported ("N"); anything else outside SUPPORTED is not listed at all.
NOT_SUPPORTED = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())
# Operators added to the parser after the baseline of each major version (ONNX-TensorRT changelog, TensorRT 11
# release notes): the release that first imports them.
ADDED_IN = {
    "BlackmanWindow": (10, 4), "HammingWindow": (10, 4), "HannWindow": (10, 4), "STFT": (10, 5),
    "Attention": (10, 14), "RotaryEmbedding": (10, 15), "RMSNormalization": (10, 15), "TensorScatter": (10, 15),
    "Swish": (11, 0), "DFT": (11, 2),
}
# The TensorRT each major version is checked against: the oldest release that matters for deployment.
TENSORRT = {
    10: {"baseline": (10, 3), "max_opset": 20,
         "for": "TensorRT 10.x; baseline 10.3, the TensorRT of JetPack 6.1/6.2 (Jetson Orin)"},
    11: {"baseline": (11, 0), "max_opset": 24,
         "for": "TensorRT 11.x (x86-64 and SBSA GPUs; JetPack 7.2.2+ from TensorRT 11.4.1)"},
}
MIN_OPSET = 9

# Operators TensorRT runs in INT8 when Q/DQ feed them; an Add joining a residual onto their output is fused too.
QUANTIZABLE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
FP16_SUBNORMAL = 2.0 ** -14  # fp16 scales below this lose precision (subnormal)


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" (the parser or the builder rejects it, or the INT8 artifact is wrong) or "warning"
    code: str
    message: str
    node: str = ""
    versions: tuple[int, ...] = ()

    def __str__(self) -> str:
        where = f" node {self.node!r}:" if self.node else ""
        trt = f" [TensorRT {', '.join(map(str, self.versions))}]" if self.versions else ""
        return f"{self.severity} {self.code}{trt}:{where} {self.message}"

    def to_json(self) -> dict:
        return {"severity": self.severity, "code": self.code, "node": self.node, "message": self.message,
                "versions": list(self.versions)}


def check_model(model, versions=(10, 11)) -> list[Finding]:
    """Findings for an onnx.ModelProto or a path (external weights are not loaded: only their shapes are read)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    versions = tuple(int(v) for v in versions)
    unknown = [v for v in versions if v not in TENSORRT]
    if unknown:
        raise LitetextError(f"TensorRT versions {unknown} are not known here; choose from {sorted(TENSORRT)}")
    findings: list[Finding] = []
    findings += _check_opset(model, versions)
    findings += _check_ops(model.graph, versions)
    findings += _check_qdq(model)
    return findings


def errors_of(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def check_bundle(path, versions=(10, 11)) -> dict[str, list[Finding]]:
    """Findings per graph of a bundle folder (any target: an onnx bundle can be checked for TensorRT too)."""
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise LitetextError(f"{path} is not a litetext bundle (no manifest.json); make one with litetext export")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    out: dict[str, list[Finding]] = {}
    for name, graph in manifest["graphs"].items():
        file = path / graph["file"]
        if file.is_dir():  # a Core ML package is a folder
            raise LitetextError(f"graph {name} of {path} is {graph['file']}, not an ONNX graph: TensorRT checks apply "
                                "to onnx and tensorrt bundles (litetext export --target tensorrt)")
        if not file.is_file():
            raise LitetextError(f"{path} is incomplete: graph {name} file {graph['file']} is missing")
        findings = check_model(file, versions)
        if manifest.get("target") == "tensorrt":
            for v in versions:
                recipe = file.with_name(f"{file.stem}.trt{v}.sh")
                if not recipe.is_file():
                    findings.append(Finding("warning", "no-recipe", f"no build recipe {recipe.name} in the bundle",
                                            versions=(v,)))
        out[name] = findings
    return out


# --- operators -------------------------------------------------------------------------------------------------


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _check_opset(model, versions) -> list[Finding]:
    opset = _opset(model)
    found = []
    for v in versions:
        top = TENSORRT[v]["max_opset"]
        if not MIN_OPSET <= opset <= top:
            found.append(Finding("error", "opset", f"the graph is opset {opset}; the TensorRT {v} parser reads "
                                 f"opsets {MIN_OPSET} to {top} ({TENSORRT[v]['for']})", versions=(v,)))
    return found


def _walk(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _walk(attr.g)
            for sub in attr.graphs:
                yield from _walk(sub)


def _check_ops(graph, versions) -> list[Finding]:
    found = []
    for node in _walk(graph):
        name = node.name or f"<{node.op_type} -> {', '.join(node.output)}>"
        if node.domain not in ("", "ai.onnx"):
            found.append(Finding("error", "unsupported-op", f"{node.domain}.{node.op_type} is not a standard ONNX "
                                 "operator; TensorRT imports it only through a plugin of that name", name, versions))
            continue
        op = node.op_type
        if op in NOT_SUPPORTED or (op not in SUPPORTED and op not in ADDED_IN):
            listed = "listed as unsupported" if op in NOT_SUPPORTED else "not listed"
            found.append(Finding("error", "unsupported-op", f"{op} is {listed} in the ONNX-TensorRT operator support "
                                 "matrix", name, versions))
            continue
        since = ADDED_IN.get(op)
        for v in versions:
            if since and since > TENSORRT[v]["baseline"]:
                where = f"not by {TENSORRT[v]['for']}" if since[0] == v else f"not by TensorRT {v}"
                found.append(Finding("error", "unsupported-op", f"{op} is imported from TensorRT {since[0]}.{since[1]} "
                                     f"on, {where}", name, (v,)))
    return found


# --- Q/DQ ------------------------------------------------------------------------------------------------------


def _check_qdq(model) -> list[Finding]:
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:  # Constant nodes count as initializers here
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = node.attribute[0].t
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    opset = _opset(model)
    found: list[Finding] = []

    def array(name):
        t = inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = node.name or node.output[0]
        scale, zero = array(node.input[1]) if len(node.input) > 1 else None, None
        zp_tensor = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if len(node.input) > 2 and node.input[2] and zp_tensor is None:
            found.append(Finding("error", "zero-point", "the zero point is computed, not a constant; TensorRT needs "
                                 "a constant zero point of 0", name))
        if zp_tensor is not None:
            zero = numpy_helper.to_array(zp_tensor)
            dtype = TensorProto.DataType.Name(zp_tensor.data_type)
            if zp_tensor.data_type == TensorProto.UINT8:
                found.append(Finding("error", "uint8-qdq", "uint8 quantization (asymmetric, ONNX Runtime style): "
                                     "TensorRT quantizes to int8 with zero point 0", name))
            elif zp_tensor.data_type == TensorProto.INT32 and node.op_type == "DequantizeLinear":
                pass  # reported below as an int32 DequantizeLinear
            elif zp_tensor.data_type not in (TensorProto.INT8,):
                found.append(Finding("error", "qdq-type", f"{dtype} quantization; this checker expects int8 "
                                     "(TensorRT's INT8 explicit quantization)", name))
            if zero.size and np.any(zero != 0):
                found.append(Finding("error", "nonzero-zero-point", f"zero point {_short(zero)} is not 0: TensorRT "
                                     "quantization is symmetric and the parser rejects other zero points", name))
        if scale is None:
            found.append(Finding("error", "scale", "the scale is computed, not a constant; TensorRT needs constant "
                                 "scales", name))
        else:
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                found.append(Finding("error", "scale", "scales must be finite and positive", name))
            if scale.dtype == np.float16:
                if opset < 19:
                    found.append(Finding("error", "fp16-scale-opset", f"fp16 scales need opset 19 (this graph is "
                                         f"{opset})", name))
                if np.any(np.abs(scale.astype(np.float32)) < FP16_SUBNORMAL):
                    found.append(Finding("warning", "fp16-subnormal-scale", f"scale {float(np.min(scale)):.3g} is "
                                         "subnormal in fp16", name))
        if node.op_type == "DequantizeLinear":
            src = node.input[0]
            src_type = inits[src].data_type if src in inits else None
            if src_type is None and src in producers and producers[src].op_type == "QuantizeLinear":
                q_zp = producers[src].input[2] if len(producers[src].input) > 2 else ""
                src_type = inits[q_zp].data_type if q_zp in inits else None
            if src_type == TensorProto.INT32 or (zp_tensor is not None and zp_tensor.data_type == TensorProto.INT32):
                found.append(Finding("error", "int32-dq", "DequantizeLinear of int32 (a quantized bias): TensorRT "
                                     "takes int8 DequantizeLinear only; keep biases in floating point", name))
                continue
            # weights: int8 initializers, or float initializers TensorRT quantizes itself through a QuantizeLinear
            weight = inits.get(src)
            if weight is None and src in producers and producers[src].op_type == "QuantizeLinear":
                weight = inits.get(producers[src].input[0])
            is_weight = weight is not None
            for consumer, index in consumers.get(node.output[0], []):
                found += _check_dq_consumer(node, consumer, index, producers, is_weight)
            if is_weight and scale is not None:
                found += _check_weight_axis(node, scale, axis, weight, consumers.get(node.output[0], []))
            elif scale is not None and scale.size > 1:
                found.append(Finding("error", "activation-per-channel", f"activation DequantizeLinear with "
                                     f"{scale.size} scales: TensorRT quantizes activations per tensor", name))
        else:  # QuantizeLinear
            for consumer, _ in consumers.get(node.output[0], []):
                if consumer.op_type != "DequantizeLinear":
                    found.append(Finding("error", "qdq-misplaced", f"QuantizeLinear output feeds {consumer.op_type} "
                                         f"{consumer.name!r}; it must feed DequantizeLinear only", name))
            if any(o.name == node.output[0] for o in graph.output):
                found.append(Finding("error", "qdq-misplaced", "a quantized tensor is a graph output", name))
            if scale is not None and scale.size > 1 and node.input[0] not in inits:
                found.append(Finding("error", "activation-per-channel", f"activation QuantizeLinear with {scale.size}"
                                     " scales: TensorRT quantizes activations per tensor", name))
    return found


def _check_dq_consumer(dq, consumer, index, producers, is_weight) -> list[Finding]:
    name = dq.name or dq.output[0]
    op = consumer.op_type
    if op in QUANTIZABLE:
        if op == "Conv" and index == 2 or op == "Gemm" and index == 2:
            return [Finding("error", "qdq-misplaced", f"DequantizeLinear feeds the bias of {op} {consumer.name!r}; "
                            "TensorRT wants biases in floating point", name)]
        return []
    if op == "Add" and not is_weight:
        other = [n for n in consumer.input if n != dq.output[0]]
        source = producers.get(other[0]).op_type if other and other[0] in producers else None
        if source in QUANTIZABLE or source == "DequantizeLinear":
            return []  # a residual joined onto a Conv/Gemm/MatMul output, or an Add of two INT8 tensors: fused
        return [Finding("error", "qdq-misplaced", f"DequantizeLinear feeds Add {consumer.name!r}, which is not a "
                        "residual Add on a Conv/Gemm/MatMul output (nor an Add of two quantized tensors) that TensorRT "
                        "fuses", name)]
    return [Finding("error", "qdq-misplaced", f"DequantizeLinear feeds {op} {consumer.name!r}, which TensorRT does not "
                    "run in INT8 from Q/DQ: it reads int8-rounded values and runs in float (Q/DQ belong on "
                    "Conv/Gemm/MatMul inputs and the residual Adds TensorRT fuses)", name)]


def _weight_axis(consumer, index, rank) -> int | None:
    """The output-channel axis of a weight at input `index` of `consumer`; None when it is not a weight slot."""
    if consumer.op_type == "Conv" and index == 1:
        return 0
    if consumer.op_type == "ConvTranspose" and index == 1:
        return 1
    if consumer.op_type == "Gemm" and index == 1:
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if consumer.op_type == "MatMul" and index == 1:
        return rank - 1
    return None


def _check_weight_axis(dq, scale, axis, weight, consumers) -> list[Finding]:
    name = dq.name or dq.output[0]
    rank = len(weight.dims)
    found = []
    for consumer, index in consumers:
        want = _weight_axis(consumer, index, rank)
        if want is None:
            continue
        if scale.size == 1:
            found.append(Finding("warning", "weight-per-tensor", f"weights of {consumer.op_type} {consumer.name!r} "
                                 "are quantized per tensor; per output channel keeps more accuracy", name))
            continue
        got = axis if axis >= 0 else axis + rank
        if got != want or scale.size != weight.dims[want]:
            found.append(Finding("error", "weight-axis", f"weights of {consumer.op_type} {consumer.name!r} are "
                                 f"quantized along axis {got} ({scale.size} scales); the output-channel axis is {want} "
                                 f"({weight.dims[want]} channels)", name))
    return found


def _short(values: np.ndarray) -> str:
    flat = values.reshape(-1)
    return str(flat[:4].tolist()) + ("..." if flat.size > 4 else "")
