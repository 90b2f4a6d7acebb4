"""TensorRT target: ONNX graphs made for TensorRT's ONNX parser (10.x and 11.x), engines built on the device.

The artifact is ONNX, not an engine: engines are specific to a GPU and a TensorRT version, so they are built where
they run (`litetext build-engine`, or the trtexec recipe beside each graph). What the graph carries:

- fp16 in the graph (weights and compute; fp32 inputs and outputs), opset 19: TensorRT 11 networks are strongly
  typed, so the precision must be in the graph; TensorRT 10 builds the same graph with `--stronglyTyped`.
- INT8 as explicit Q/DQ (TensorRT 11 removed implicit calibration): symmetric int8 (zero point 0, never uint8),
  activations per tensor calibrated on real prompts (ONNX Runtime's calibrators), weights per output channel (axis
  0 of Conv weights, the last axis of MatMul weights), Q/DQ only on Conv/Gemm/MatMul inputs, biases and the token
  table in fp16 (no int32 DequantizeLinear; TensorRT runs Gather in floating point), fp16 scales (opset 19).
- the batch axis dynamic; each recipe gives TensorRT an optimization profile (min/opt/max batch).

Beside each graph (`<graph>.onnx`) the bundle holds:

    <graph>.trt10.sh         trtexec recipe for TensorRT 10.x (JetPack 6: 10.3), explicit INT8, and the implicit
                             INT8 + DLA alternative for Orin
    <graph>.trt11.sh         trtexec recipe for TensorRT 11.x
    <graph>.calib.cache      INT8 only: TensorRT's calibration cache written from the calibrated ranges, for
                             implicit INT8 on TensorRT <= 10 (`strip-qdq` makes the graph it applies to)
    <graph>.tensorrt.json    what was done: precision, quantization, profile, recipes, static check

Without TensorRT (as on the machine that exports), `open_runner` runs the graph in ONNX Runtime on the CPU, Q/DQ
included, and says so; with TensorRT and a GPU it builds and runs an engine.

    python -m litetext.export.tensorrt strip-qdq text_encoder.onnx text_encoder.implicit.onnx
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec
from litetext.runtimes.onnxruntime_runner import OnnxRuntimeRunner

OPSET = 19  # fp16 QuantizeLinear/DequantizeLinear need 19; TensorRT 10.0+ reads 9..20, 11.x reads 9..24+
PRECISIONS = ("fp16", "int8")
FILE_SUFFIX = ".onnx"
TENSORRT_VERSIONS = (10, 11)
CACHE_TENSORRT_VERSION = "10.3.0"  # JetPack 6.1 and 6.2; build-engine rewrites the header for the installed one
BATCH_PROFILE = (1, 8, 32)  # min, opt, max batch in the recipes' optimization profile
QUANTIZED_OPS = ("MatMul", "Conv", "Gemm")
SIDECAR_SUFFIX = ".tensorrt.json"
CACHE_SUFFIX = ".calib.cache"
NOT_INSTALLED = ("tensorrt is not installed (its libraries come from NVIDIA, not PyPI): on a Jetson use JetPack's "
                 "python3-libnvinfer; elsewhere pip install tensorrt from NVIDIA's index (--extra-index-url "
                 "https://pypi.nvidia.com)")


# --- target functions (the same as litetext.export.onnx) -------------------------------------------------------


def export_graph(module, spec: GraphSpec, example: dict, path: Path, precision: str, calibration=None, *,
                 tensorrt_versions=TENSORRT_VERSIONS, cache_version: str = CACHE_TENSORRT_VERSION,
                 batch_profile=BATCH_PROFILE) -> Path:
    """Trace `module`, write the TensorRT-ready ONNX graph at `path` and its recipes and sidecar beside it.
    INT8 needs `calibration` (litetext.calibration.int8.Int8Calibration: feeds from real prompts and a method)."""
    import onnx

    from litetext.export import onnx as onnx_target
    from litetext.export.tensorrt_check import check_model, errors_of

    path = Path(path)
    if precision not in PRECISIONS:
        raise LitetextError(f"the tensorrt target exports {', '.join(PRECISIONS)}, not {precision!r} "
                            "(fp32 engines are rarely what a Jetson wants; use the onnx target for fp32)")
    if precision == "int8" and calibration is None:
        raise LitetextError("int8 export needs calibration prompts")
    versions = tuple(int(v) for v in tensorrt_versions)
    if not versions or any(v not in TENSORRT_VERSIONS for v in versions):
        raise LitetextError(f"TensorRT versions {list(versions)}: recipes are written for "
                            f"{' and '.join(map(str, TENSORRT_VERSIONS))}")
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}.tensorrt-"))
    try:
        fp32 = scratch / "fp32.onnx"
        onnx_target.export_graph(module, spec, example, fp32, "fp32")
        report: dict = {}
        ranges = None
        if precision == "int8":
            ranges, model, report = quantize_for_tensorrt(fp32, spec, calibration)
        else:
            model = to_tensorrt_fp16(onnx.load(str(fp32)))
        onnx_target.save(model, path)
        onnx.checker.check_model(str(path), full_check=True)
        findings = check_model(path, versions)
        if errors_of(findings):
            details = "; ".join(str(f) for f in errors_of(findings)[:5])
            raise LitetextError(f"{spec.name}: the TensorRT graph fails its own static check: {details}")
        extras = write_extras(path, spec, precision, ranges, versions, cache_version, batch_profile)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sidecar = {
        "format": "litetext-tensorrt/1",
        "graph": path.name,
        "precision": precision,
        "opset": OPSET,
        "tensorrt_versions": list(versions),
        "batch_profile": dict(zip(("min", "opt", "max"), batch_profile)),
        "compute": "fp16 in the graph (strongly typed), fp32 inputs and outputs",
        **extras,
        "static_check": {"errors": 0, "warnings": [str(f) for f in findings]},
    }
    if precision == "int8":
        sidecar["quantization"] = report
        calibration.report = {**calibration.report, **report, "tensorrt": {k: sidecar[k] for k in ("recipes",)}}
    (path.with_name(path.stem + SIDECAR_SUFFIX)).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return path


def files_of(path: Path) -> list[Path]:
    """The files of the graph itself (the graph, and its external weights if any); recipes are in `extras_of`."""
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def extras_of(path: Path) -> list[Path]:
    """Recipes, calibration cache and sidecar written beside the graph."""
    names = [f"{path.stem}.trt{v}.sh" for v in TENSORRT_VERSIONS] + [path.stem + CACHE_SUFFIX, path.stem + SIDECAR_SUFFIX]
    return [path.with_name(n) for n in names if path.with_name(n).exists()]


def graph_manifest(path: Path, spec: GraphSpec, precision: str) -> dict:
    """What the bundle manifest records for a TensorRT graph (read from the sidecar), and which runtime measured
    its parity."""
    sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
    info = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    info.pop("quantization", None)  # already under "calibration"
    info["parity_runtime"] = parity_runtime()
    info["extra_files"] = [p.name for p in extras_of(path)]
    return {"tensorrt": info}


def parity_runtime() -> str:
    if tensorrt_usable():
        import tensorrt as trt

        return f"TensorRT {trt.__version__} engine built from the graph on this machine's GPU"
    return ("ONNX Runtime on the CPU, running the Q/DQ / fp16 graph as written (TensorRT is not installed here: "
            "no engine was built or run; build one on the device and compare there)")


def open_runner(path: Path, spec: GraphSpec, precision: str):
    """A TensorRT engine runner where TensorRT and a GPU are present (the engine `build-engine` wrote beside the
    graph, or one built now), else ONNX Runtime on the CPU running the same graph."""
    path = Path(path)
    if tensorrt_usable():
        import tensorrt as trt

        from litetext.runtimes.tensorrt_runner import TensorRTRunner

        plan = path.with_name(f"{path.stem}.trt{trt.__version__.split('.')[0]}.plan")
        if plan.is_file():
            return TensorRTRunner(plan, spec, precision)
        return TensorRTRunner.from_onnx(path, spec, precision)
    return OnnxRuntimeStandIn(path, spec, precision)


class OnnxRuntimeStandIn(OnnxRuntimeRunner):
    """ONNX Runtime (CPU) running a TensorRT-target graph as written, where TensorRT is absent."""

    runtime = "onnxruntime-cpu (TensorRT absent)"


# --- TensorRT on this machine ----------------------------------------------------------------------------------


def import_tensorrt():
    """The tensorrt module, or a LitetextError saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise LitetextError(NOT_INSTALLED) from None
    return tensorrt


def tensorrt_usable() -> bool:
    """True when tensorrt imports and a CUDA device is visible."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def tensorrt_version_int(version: str) -> int:
    """The version number TensorRT writes in calibration cache headers: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    parts = [int(p) for p in str(version).split(".")[:3]] + [0, 0]
    major, minor, patch = parts[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


# --- fp16 and INT8 graphs --------------------------------------------------------------------------------------


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


def quantize_for_tensorrt(fp32_path: Path, spec: GraphSpec, calibration):
    """Calibrate, quantize to TensorRT's Q/DQ flavour, convert to fp16; if the calibration prompts miss the target,
    keep the most sensitive layers unquantized (measured on the calibration prompts only). Returns the ranges, the
    model and a report."""
    import onnx

    from litetext.calibration.int8 import METHODS, calibrate_ranges, layer_group

    # Every float tensor: the calibration cache for implicit INT8 (TensorRT <= 10) needs them all.
    ranges = calibrate_ranges(fp32_path, calibration.feeds, calibration.method)
    fp32 = onnx.load(str(fp32_path))
    quantizable = [n for n in fp32.graph.node if n.op_type in QUANTIZED_OPS]
    groups = sorted({layer_group(n.name) for n in quantizable})

    def build(exclude_groups):
        excluded = [n.name for n in quantizable if layer_group(n.name) in exclude_groups]
        return qdq_model(fp32_path, ranges, excluded)

    model = build([])
    figures = _calibration_parity(fp32_path, model, spec, calibration.feeds)
    kept: list[str] = []
    sensitivity: dict[str, float] = {}
    if not _meets(figures, calibration):
        for group in groups:  # each layer's error when it alone is quantized
            alone = build([g for g in groups if g != group])
            sensitivity[group] = 1.0 - _calibration_parity(fp32_path, alone, spec, calibration.feeds)["cosine_mean"]
        for group in sorted(sensitivity, key=sensitivity.get, reverse=True):
            kept.append(group)
            model = build(kept)
            figures = _calibration_parity(fp32_path, model, spec, calibration.feeds)
            if _meets(figures, calibration) or len(kept) == len(groups):
                break
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
    _drop_unused_initializers(graph)
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


def _meets(figures, calibration) -> bool:
    return (figures["cosine_mean"] >= calibration.target_cosine_mean
            and figures["cosine_worst_1pct"] >= calibration.target_cosine_worst_1pct)


# --- implicit INT8 (TensorRT <= 10): calibration cache and the Q/DQ-free graph it applies to ---------------------


def strip_qdq(model):
    """The graph TensorRT <= 10's implicit INT8 builds from: activation Q/DQ pairs removed (their consumers read the
    original tensor, whose name the calibration cache uses), weight DequantizeLinear folded into fp16 weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    rename: dict[str, str] = {}
    new_inits = []
    drop = set()
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.size > 1:
                shape = [1] * q.ndim
                shape[axis] = scale.size
                scale = scale.reshape(shape)
            weight = (q * scale.astype(np.float32)).astype(scale.dtype)
            new_inits.append(numpy_helper.from_array(weight, node.output[0]))
            drop.add(node.name or node.output[0])
        elif node.op_type == "DequantizeLinear":
            q = producers.get(node.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                rename[node.output[0]] = q.input[0]
                drop.add(node.name or node.output[0])
                drop.add(q.name or q.output[0])
    keep = [n for n in graph.node if (n.name or n.output[0]) not in drop]
    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new_inits)
    _drop_unused_initializers(graph)
    return model


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


def read_calibration_cache(path: Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) of a TensorRT calibration cache."""
    text = Path(path).read_text(encoding="ascii").splitlines()
    if not text or not text[0].startswith("TRT-"):
        raise LitetextError(f"{path} is not a TensorRT calibration cache (no TRT-<version>-<algorithm> header)")
    scales = {}
    for line in text[1:]:
        if not line.strip():
            continue
        name, _, value = line.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(value.strip()))[0]
    return text[0], scales


def ranges_amax(ranges) -> dict[str, float]:
    """{tensor: max(|min|, |max|)} from ONNX Runtime's calibration result."""
    out = {}
    for name, data in ranges.data.items() if hasattr(ranges, "data") else ranges.items():
        values = getattr(data, "range_value", data)
        low, high = (float(np.asarray(v).reshape(-1)[0]) for v in values[:2])
        out[name] = max(abs(low), abs(high))
    return out


# --- recipes ---------------------------------------------------------------------------------------------------


def shape_profile(spec: GraphSpec, batch_profile=BATCH_PROFILE) -> dict[str, list[tuple[int, ...]]]:
    """{input: [min, opt, max]} shapes: the batch axis from `batch_profile`, every other axis fixed."""
    profile = {}
    for tensor in spec.inputs:
        shapes = []
        for batch in batch_profile:
            dims = []
            for d in tensor.shape:
                if isinstance(d, str) and d != "batch":
                    raise LitetextError(f"{spec.name}: input {tensor.name} has a dynamic axis {d!r} besides the batch")
                dims.append(batch if isinstance(d, str) else int(d))
            shapes.append(tuple(dims))
        profile[tensor.name] = shapes
    return profile


def _shapes_flag(profile, which: int) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shapes[which]))}" for name, shapes in profile.items())


# Operator types the DLA cores of Orin cannot run (TensorRT's DLA supported-layers list): every one falls back to
# the GPU, each fallback a copy between DLA and GPU.
DLA_LACKS = frozenset({"Gather", "LayerNormalization", "Erf", "Div", "Softmax", "Where", "Expand", "Cast",
                       "Range", "Equal", "Not", "ReduceMean", "Sqrt", "Pow", "GatherElements", "ScatterND", "TopK",
                       "NonZero", "Einsum", "GridSample", "Tile", "Trilu"})


def dla_assessment(model) -> dict:
    """Whether Orin's DLA serves a graph: MatMul between two activations and the operator types above run on the GPU.
    A lower bound (the list is not the whole of what DLA lacks); a DLA build with GPU fallback tells exactly."""
    inits = {t.name for t in model.graph.initializer}
    # weights reach their MatMul through a DequantizeLinear in INT8 graphs
    inits |= {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    lacking: dict[str, int] = {}
    total = 0
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        op = node.op_type
        if op == "Shape" or op == "Gather" and node.input[0] not in inits:
            continue  # shape arithmetic: TensorRT computes it at build or enqueue time, on no core
        total += 1
        if op == "MatMul" and not any(i in inits for i in node.input):
            op = "MatMul (two activations)"
        elif op not in DLA_LACKS:
            continue
        lacking[op] = lacking.get(op, 0) + 1
    fallback = sum(lacking.values())
    return {"serves": fallback == 0, "layers": total, "gpu_fallback_layers": fallback, "lacking": lacking}


def recipe_text(graph_file: str, spec: GraphSpec, precision: str, major: int, batch_profile=BATCH_PROFILE,
                cache_file: str | None = None, dla: dict | None = None, cache_header: str = "") -> str:
    stem = Path(graph_file).stem
    profile = shape_profile(spec, batch_profile)
    shapes = (f"--minShapes={_shapes_flag(profile, 0)} --optShapes={_shapes_flag(profile, 1)} "
              f"--maxShapes={_shapes_flag(profile, 2)}")
    fixed = f"--shapes={_shapes_flag(profile, 1)}"
    what = "INT8 explicit Q/DQ, fp16 elsewhere" if precision == "int8" else "fp16"
    lines = ["#!/bin/sh", f"# litetext: build {graph_file} ({what}) into a TensorRT {major}.x engine.",
             "# Run it on the device that will run the engine: engines are specific to a GPU and a TensorRT version.",
             "# The optimization profile covers batch "
             f"{batch_profile[0]}..{batch_profile[2]} (tuned for {batch_profile[1]}); edit the shapes for other batches.",
             "set -e", 'cd "$(dirname "$0")"', 'TRTEXEC="${TRTEXEC:-trtexec}"  # JetPack: /usr/src/tensorrt/bin/trtexec', ""]
    if major == 10:
        lines += ["# TensorRT 10.x (JetPack 6.1/6.2 ship 10.3; x86-64 and SBSA from NVIDIA's packages): the graph carries",
                  "# its precision, so it builds strongly typed (no --fp16/--int8 flags).",
                  f'"$TRTEXEC" --onnx={graph_file} --saveEngine={stem}.trt10.plan \\',
                  f"  {shapes} \\",
                  "  --stronglyTyped --timingCacheFile=timing.trt10.cache", ""]
        if precision == "int8" and cache_file:
            lines += ["# Implicit INT8 (TensorRT <= 10 only; removed in 11), e.g. for Orin's DLA, which runs INT8 from a",
                      "# calibration cache: build the Q/DQ-free graph the cache's tensor names belong to, then let",
                      f"# TensorRT pick INT8/fp16 per layer. The cache's first line, {cache_header}, names the",
                      "# TensorRT that reads it: for another 10.x rewrite it to",
                      "# TRT-<major*10000+minor*100+patch>-EntropyCalibration2 (build-engine --implicit-int8 does).",
                      f"# python -m litetext.export.tensorrt strip-qdq {graph_file} {stem}.implicit.onnx",
                      f'# "$TRTEXEC" --onnx={stem}.implicit.onnx --saveEngine={stem}.trt10-implicit.plan \\',
                      f"#   {shapes} \\",
                      f"#   --int8 --fp16 --calib={cache_file} --timingCacheFile=timing.trt10.cache", ""]
        lines += _dla_lines(graph_file, stem, precision, cache_file, fixed, dla, major)
    else:
        lines += ["# TensorRT 11.x: networks are always strongly typed and precision flags are gone; the graph's fp16",
                  "# and Q/DQ decide the precision.",
                  f'"$TRTEXEC" --onnx={graph_file} --saveEngine={stem}.trt11.plan \\',
                  f"  {shapes} \\",
                  "  --timingCacheFile=timing.trt11.cache", ""]
        lines += _dla_lines(graph_file, stem, precision, cache_file, fixed, dla, major)
    return "\n".join(lines) + "\n"


def _dla_lines(graph_file, stem, precision, cache_file, fixed, dla, major) -> list[str]:
    dla = dla or {}
    lacking = ", ".join(f"{k} x{v}" for k, v in sorted(dla.get("lacking", {}).items()))
    head = ["# DLA (Jetson AGX Orin / Orin NX; static shapes, batch fixed at build time):"]
    if dla.get("serves"):
        head.append("# every layer of this graph is a DLA layer type.")
    else:
        head += [f"# not recommended for this graph: at least {dla.get('gpu_fallback_layers', '?')} of {dla.get('layers', '?')} "
                 "layers run on the GPU anyway",
                 f"# ({lacking}), each fallback a DLA<->GPU copy. Kept for measurement only."]
    if major == 10:
        if precision == "int8":
            body = [f'# "$TRTEXEC" --onnx={stem}.implicit.onnx --saveEngine={stem}.trt10-dla0.plan {fixed} \\',
                    f"#   --useDLACore=0 --allowGPUFallback --int8 --fp16 --calib={cache_file}"]
        else:
            body = [f'# "$TRTEXEC" --onnx={graph_file} --saveEngine={stem}.trt10-dla0.plan {fixed} \\',
                    "#   --useDLACore=0 --allowGPUFallback --fp16"]
    else:
        body = ["# TensorRT 11 runs DLA only from 11.4.1 on, on JetPack 7.2.2+ (Orin; Thor has no DLA), strongly typed:",
                f'# "$TRTEXEC" --onnx={graph_file} --saveEngine={stem}.trt11-dla0.plan {fixed} --useDLACore=0 --allowGPUFallback']
    return head + body + [""]


def write_extras(path: Path, spec: GraphSpec, precision: str, ranges, versions, cache_version: str,
                 batch_profile) -> dict:
    """Recipes per TensorRT version and, for INT8, the calibration cache; returns their description."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dla = dla_assessment(model)
    out: dict = {"recipes": {}, "dla": dla}
    cache_file = None
    header = ""
    if precision == "int8" and ranges is not None:
        stripped = strip_qdq(model)
        names = {o for n in stripped.graph.node for o in n.output} | {i.name for i in stripped.graph.input}
        amax = {k: v for k, v in ranges_amax(ranges).items() if k in names}
        cache_file = path.stem + CACHE_SUFFIX
        header = write_calibration_cache(path.with_name(cache_file), amax, cache_version)
        out["calibration_cache"] = {
            "file": cache_file, "header": header, "tensors": len(amax), "tensorrt_version": cache_version,
            "scale": "amax / 127 as float32 hex", "for": "TensorRT <= 10 implicit INT8 (and Orin DLA), applied to the "
            "graph `python -m litetext.export.tensorrt strip-qdq` makes; TensorRT 11 ignores it (explicit Q/DQ only)",
        }
    for major in versions:
        name = f"{path.stem}.trt{major}.sh"
        text = recipe_text(path.name, spec, precision, major, batch_profile, cache_file, dla, header)
        recipe = path.with_name(name)
        recipe.write_text(text, encoding="utf-8")
        recipe.chmod(0o755)
        out["recipes"][str(major)] = name
    return out


# --- engines (on the device) -----------------------------------------------------------------------------------


def build_engine(onnx_path: Path, spec: GraphSpec, out: Path, *, batch_profile=BATCH_PROFILE, dla_core: int | None = None,
                 implicit_int8: bool = False, calibration_cache: Path | None = None, timing_cache: Path | None = None,
                 expect_major: int | None = None, log=lambda message: None) -> dict:
    """Build a serialized engine with the TensorRT Python API on this machine. Returns what was built."""
    import time

    trt = import_tensorrt()
    major = int(trt.__version__.split(".")[0])
    if expect_major is not None and major != int(expect_major):
        raise LitetextError(f"--tensorrt-version {expect_major} asked for, but TensorRT {trt.__version__} is installed")
    if implicit_int8 and major >= 11:
        raise LitetextError("implicit INT8 (calibration cache) was removed in TensorRT 11; build the Q/DQ graph instead")
    if dla_core is not None and major == 10 and not implicit_int8 and _has_qdq(onnx_path):
        raise LitetextError("DLA on TensorRT 10 runs INT8 from a calibration cache: pass --implicit-int8")
    started = time.perf_counter()
    source = Path(onnx_path)
    scratch = None
    if implicit_int8:
        import onnx

        scratch = Path(tempfile.mkdtemp(prefix="litetext-implicit-"))
        source = scratch / (Path(onnx_path).stem + ".implicit.onnx")
        onnx.save(strip_qdq(onnx.load(str(onnx_path))), str(source))
        log(f"implicit INT8: Q/DQ stripped into {source.name}")
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        strongly_typed = major >= 11 or (not implicit_int8 and dla_core is None)
        flags = 0
        if strongly_typed and major < 11:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = [parser.get_error(i) for i in range(parser.num_errors)]
            details = "; ".join(f"node {e.node_name()!r} ({e.node_operator()}): {e.desc()}" for e in errors[:5])
            raise LitetextError(f"TensorRT {trt.__version__} cannot parse {Path(onnx_path).name}: {details}")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        shapes = shape_profile(spec, (batch_profile[1],) * 3 if dla_core is not None else batch_profile)
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
        if not strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
        if implicit_int8:
            config.set_flag(trt.BuilderFlag.INT8)
            cache = Path(calibration_cache or Path(onnx_path).with_name(Path(onnx_path).stem + CACHE_SUFFIX))
            config.int8_calibrator = _cache_calibrator(trt, cache)
            config.set_calibration_profile(profile)
        if dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(dla_core)
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
        timing = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(timing, False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise LitetextError(f"TensorRT {trt.__version__} could not build an engine from {Path(onnx_path).name} "
                                "(its log above says why)")
        Path(out).write_bytes(bytes(plan))
        if timing_cache:
            Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {"engine": str(out), "tensorrt": trt.__version__, "strongly_typed": strongly_typed,
            "implicit_int8": implicit_int8, "dla_core": dla_core, "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def _has_qdq(path: Path) -> bool:
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)


def _cache_calibrator(trt, cache: Path):
    """An entropy-2 calibrator that only reads the bundle's cache (header rewritten for the installed TensorRT)."""
    if not cache.is_file():
        raise LitetextError(f"implicit INT8 needs the calibration cache {cache}; export with --precision int8")
    _, scales = read_calibration_cache(cache)
    header = f"TRT-{tensorrt_version_int(trt.__version__)}-EntropyCalibration2"
    text = "\n".join([header] + [f"{k}: {struct.unpack('>I', struct.pack('>f', v))[0]:08x}" for k, v in scales.items()])
    data = (text + "\n").encode("ascii")

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None  # no data: every scale comes from the cache

        def read_calibration_cache(self):
            return data

        def write_calibration_cache(self, cache_data):
            return None

    return CacheCalibrator()


# --- command line: python -m litetext.export.tensorrt strip-qdq IN OUT ----------------------------------------


def main(argv=None) -> int:
    import argparse

    import onnx

    parser = argparse.ArgumentParser(prog="python -m litetext.export.tensorrt")
    sub = parser.add_subparsers(dest="command", required=True)
    strip = sub.add_parser("strip-qdq", help="write the Q/DQ-free graph a calibration cache applies to")
    strip.add_argument("source")
    strip.add_argument("out")
    args = parser.parse_args(argv)
    model = strip_qdq(onnx.load(args.source))
    onnx.save(model, args.out)
    print(f"{args.out}: {len(model.graph.node)} nodes, no Q/DQ")
    return 0


def _drop_unused_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


if __name__ == "__main__":
    raise SystemExit(main())
