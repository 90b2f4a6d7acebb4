"""INT8 with activations calibrated on real prompts: ONNX Runtime's calibrators and QDQ quantizer.

- Weights per-channel symmetric INT8 (MatMul, Gemm, Conv, ConvTranspose). The token-embedding table (Gather) is
  8-bit too: it is 60% of S0's parameters, so leaving it in fp32 would keep the file above a third of fp32. ONNX Runtime
  quantizes a Gather's table as it quantizes activations (uint8, one scale shared with the Gather output);
  per-row scales would be finer and are not done yet.
- Activations uint8 with ranges from one of three calibration methods, really different from each other:
  ONNX Runtime's Entropy calibrator with its defaults (128 histogram bins, 128 quantized bins) searches no
  threshold at all and returns MinMax's ranges (checked in tests), so Entropy uses 2048 bins here.
- Mixed precision: each layer's contribution to the error is measured on the calibration prompts (never on the
  held-out ones), and the most sensitive layers keep fp32 activations until the calibration-set target is met.
  Their weights stay 8-bit (weight-only: int8 per output channel, dequantized in the graph): quantizing a
  layer's input activations is what costs accuracy, and fp32 weights cost four times the bytes (the full-size
  S0 text encoder under stress weights, layers 0-1 kept: 55.7 MiB with their weights in fp32, 40.7 weight-only).
"""

from __future__ import annotations

import functools
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from litetext.calibration.search import keep_most_sensitive
from litetext.errors import LitetextError
from litetext.onnx_graph import topologically_sorted

# name -> (ONNX Runtime calibration method name, calibrator options)
METHODS = {
    "minmax": ("MinMax", {}),
    "entropy": ("Entropy", {"num_bins": 2048, "num_quantized_bins": 128}),
    "percentile": ("Percentile", {"num_bins": 2048, "percentile": 99.99}),
}
DEFAULT_METHOD = "minmax"  # best worst 1% and max error on held-out prompts: benchmarks/results/int8_text_encoder.json
# ConvTranspose too: the vision neck's upsampling layers (16 MiB of fp32 weights in every SAM3-style neck) kept
# the smallest EfficientSAM3 INT8 bundle above 100 MiB; quantized (per output channel, ONNX Runtime's axis 1)
# they pass the same gates (benchmarks/results/efficientsam3_export.json, "int8+convtranspose" rows).
QUANTIZED_OPS = ["MatMul", "Gemm", "Conv", "ConvTranspose", "Gather"]


@dataclass
class Int8Calibration:
    """What an INT8 export calibrates with: feeds from real prompts, a method, and the target the mixed-
    precision search aims for on those same calibration feeds."""

    feeds: list[dict[str, np.ndarray]]  # input_ids and attention_mask (used to pick valid tokens) per batch
    method: str = DEFAULT_METHOD
    target_cosine_mean: float = 0.995
    target_cosine_worst_1pct: float = 0.98
    prompts: int = 0
    report: dict = field(default_factory=dict)  # filled by quantize_int8: method, kept-fp32 layers, sizes
    # Heads: the (height, width) of each feed's image. The search then also keeps the instances an app sees
    # (litetext.calibration.parity.instances_agree, the heads' export gate) on the calibration feeds.
    instance_image_sizes: list[tuple[int, int]] | None = None
    images: list = field(default_factory=list)  # a calibration set's images ({"path", "sha256"}), for image graphs
    # Rank layer groups on the first `ranking_feeds` feeds only (None: all): at 1008 px each heads feed costs
    # seconds per candidate and the search ranks 29 groups; the chosen graph is still checked on every feed.
    ranking_feeds: int | None = None

    def met_by(self, figures: dict) -> bool:
        """Whether calibration figures meet the search's target (and keep the instances, where measured)."""
        from litetext.calibration.parity import instances_agree

        return (figures["cosine_mean"] >= self.target_cosine_mean
                and figures["cosine_worst_1pct"] >= self.target_cosine_worst_1pct
                and ("instances" not in figures or instances_agree(figures["instances"])))


# Image trunks' numbered blocks, a mixed-precision group each (here and in Core ML's w4): TinyViT blocks.N,
# EfficientViT op_list.N, RepViT features.N.
TRUNK_BLOCKS = ("blocks", "op_list", "features")


def layer_group(node_name: str) -> str:
    """The layer a node belongs to, from the exporter's scoped names: the path up to an image trunk's innermost
    numbered block ('/vision/backbone/trunk/features.4/token_mixer/Conv' -> 'vision/backbone/trunk/features.4';
    TinyViT blocks.N, EfficientViT op_list.N), else up to a numbered layer ('/text/layers.3/mlp/fc1/MatMul' ->
    'text/layers.3'), else the module ('/projection/MatMul' -> 'projection', '/model/mask_decoder/conv/Conv' ->
    'model/mask_decoder')."""
    parts = [p for p in node_name.split("/") if p][:-1] or [node_name]
    for i in reversed(range(len(parts))):
        if re.fullmatch(rf"({'|'.join(TRUNK_BLOCKS)})\.\d+", parts[i]):
            return "/".join(parts[: i + 1])
    for i, part in enumerate(parts):
        if re.fullmatch(r"\w*layers\.\d+", part):
            return "/".join(parts[: i + 1])
    if "token_embedding" in node_name:
        return "token_embedding"
    return "/".join(parts[:2])


def calibrate_ranges(fp32_path: Path, feeds: list[dict[str, np.ndarray]], method: str, op_types=None):
    """Ranges (ONNX Runtime TensorsData) of the inputs and outputs of the `op_types` nodes of `fp32_path` (None:
    of every float tensor) over `feeds`, with `method` (a key of METHODS)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    if method not in METHODS:
        raise LitetextError(f"unknown calibration method {method!r}; choose one of: {', '.join(METHODS)}")
    if not feeds:
        raise LitetextError("INT8 needs calibration prompts; none were given")
    method_name, options = METHODS[method]
    inputs = [i.name for i in onnx.load(str(fp32_path), load_external_data=False).graph.input]

    class OneBatch(CalibrationDataReader):
        def __init__(self, feed):
            self.items = iter([{k: feed[k] for k in inputs}])

        def get_next(self):
            return next(self.items, None)

    # Beside the graph (in an export, inside the bundle's partial folder): a killed export leaves nothing elsewhere.
    with tempfile.TemporaryDirectory(dir=Path(fp32_path).parent, prefix=".calibration-") as scratch:
        calibrator = create_calibrator(
            fp32_path, op_types, augmented_model_path=str(Path(scratch) / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, method_name), extra_options=options,
        )
        calibrator.infer_session = _priority_ordered_session(calibrator)
        # One batch at a time: each call folds that batch into the running ranges (histograms) and frees its
        # intermediate tensors, gigabytes per batch for the heads at 1008 px. (ONNX Runtime's own
        # max_intermediate_outputs drops batches without folding them in, in 1.32.)
        for feed in feeds:
            calibrator.collect_data(OneBatch(feed))
        return calibrator.compute_data()


def quantize_int8(fp32_path: Path, out_path: Path, calibration: Int8Calibration) -> dict:
    """Write an INT8 QDQ model of `fp32_path` to `out_path`; returns what was done (goes to the manifest)."""
    import onnx

    # Only the tensors the quantizer uses (inputs and outputs of QUANTIZED_OPS), as quantize_static does.
    ranges = calibrate_ranges(fp32_path, calibration.feeds, calibration.method, QUANTIZED_OPS)
    options = METHODS[calibration.method][1]
    model = onnx.load(str(fp32_path))
    groups = sorted({layer_group(n.name) for n in model.graph.node if n.op_type in QUANTIZED_OPS})

    measure = _CalibrationParity(fp32_path, calibration.feeds, calibration.instance_image_sizes)
    all_int8 = _quantize(fp32_path, ranges, exclude=[])

    def keeping(kept: list[str]):
        return _quantize(fp32_path, ranges, exclude=_nodes_in(model, kept)) if kept else all_int8

    @functools.cache
    def ranking() -> _CalibrationParity:  # built when the search first needs it
        if calibration.ranking_feeds is None:
            return measure
        return _CalibrationParity(fp32_path, calibration.feeds[: calibration.ranking_feeds])

    def error_alone(group: str) -> float:  # that group alone INT8
        return 1.0 - ranking()(_quantize(fp32_path, ranges, exclude=_nodes_not_in(model, group)))["cosine_mean"]

    found = keep_most_sensitive(groups, lambda kept: measure(keeping(kept)), error_alone, calibration.met_by)
    kept, figures, sensitivity = found.kept, found.figures, found.sensitivity
    quantized = keeping(kept)  # quantized again rather than holding every candidate graph in memory
    onnx.save(quantized, str(out_path))
    cost = {"bytes": 0, "ms_per_batch": 0.0}
    if kept:  # what keeping those layers' activations fp32 costs, against the all-INT8 graph, on the calibration feeds
        cost = {"bytes": quantized.ByteSize() - all_int8.ByteSize(),
                "ms_per_batch": round(_median_ms(quantized, calibration.feeds) - _median_ms(all_int8, calibration.feeds), 3)}
    report = {
        "method": calibration.method,
        "calibrator_options": options,
        "weights": "int8 symmetric per channel (MatMul/Gemm/Conv/ConvTranspose); token table uint8 per tensor "
                   "(Gather), int8 per row where its layer is kept",
        "activations": "uint8 per tensor, calibrated, fp32 at the inputs of the kept layers",
        "calibration_prompts": calibration.prompts,
        "calibration_parity": figures,
        "target": {"cosine_mean": calibration.target_cosine_mean,
                   "cosine_worst_1pct": calibration.target_cosine_worst_1pct},
        "layers_kept_fp32_activations": kept,
        "layers_kept_cost": cost,
        "layer_sensitivity": sensitivity,
    }
    calibration.report = {**calibration.report, **report}
    return calibration.report


def _priority_ordered_session(calibrator):
    """The calibrator's session, run in ONNX Runtime's priority-based node order. In the default order the
    MinMax calibrator's ReduceMin/ReduceMax nodes run late, so every tensor they read stays alive: 14.6 GiB peak
    for one batch-1 pass of the full-size S0 heads against 1.4 GiB in priority order (ORT 1.32,
    benchmarks/calibration_memory.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the calibrator's own
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return ort.InferenceSession(calibrator.augmented_model_path, options, providers=calibrator.execution_providers)


def _quantize(fp32_path: Path, ranges, exclude: list[str]):
    """The QDQ graph with every QUANTIZED_OPS node INT8 but those in `exclude`, which keep fp32 activations and
    int8 weights (_weight_only)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    quantizer = QDQQuantizer(
        load_model_with_shape_infer(Path(fp32_path)), True, False, QuantType.QInt8, QuantType.QUInt8, ranges,
        [], exclude, QUANTIZED_OPS,
        {"WeightSymmetric": True, "QDQOpTypePerChannelSupportToAxis": {"Gather": 0, "MatMul": 1}},
    )
    quantizer.quantize_model()
    model = quantizer.model.model
    _weight_only(model, set(exclude))
    return topologically_sorted(model)


def _weight_only(model, nodes: set[str]) -> None:
    """Store the weights of `nodes` (a MatMul's, Gemm's, convolution's weight, a Gather's table) as int8,
    symmetric per output channel (per row for a table), each behind a DequantizeLinear: their inputs stay fp32.
    Weights shared by several nodes get one DequantizeLinear."""
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    dequantized: dict[str, str] = {}
    for node in model.graph.node:
        if node.name not in nodes or node.op_type not in QUANTIZED_OPS:
            continue
        index = 0 if node.op_type == "Gather" else 1
        name = node.input[index]
        if name not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[name])
        if weight.dtype != np.float32 or weight.ndim < 2:
            continue
        if name not in dequantized:
            axis = _output_axis(node)
            others = tuple(d for d in range(weight.ndim) if d != axis)
            scale = (np.abs(weight).max(axis=others) / 127.0).astype(np.float32)
            scale[scale == 0] = 1.0
            shape = [1] * weight.ndim
            shape[axis] = -1
            quantized = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
            names = [f"{name}_weight_only_{part}" for part in ("int8", "scale", "zero_point")]
            model.graph.initializer.extend([
                numpy_helper.from_array(quantized, names[0]), numpy_helper.from_array(scale, names[1]),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), names[2])])
            dequantized[name] = f"{name}_weight_only"
            model.graph.node.append(helper.make_node("DequantizeLinear", names, [dequantized[name]], axis=axis,
                                                     name=f"{name}_weight_only_DequantizeLinear"))
        node.input[index] = dequantized[name]
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    unused = [t for t in model.graph.initializer if t.name in dequantized and t.name not in used]
    for tensor in unused:
        model.graph.initializer.remove(tensor)


def _output_axis(node) -> int:
    """The axis of a node's weight that holds its output channels (one scale each)."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return {"MatMul": 1, "Conv": 0, "ConvTranspose": 1, "Gather": 0}[node.op_type]


def _nodes_in(model, groups: list[str]) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and layer_group(n.name) in groups]


def _nodes_not_in(model, group: str) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and layer_group(n.name) != group]


class _CalibrationParity:
    """Figures of candidate graphs against the fp32 graph on the calibration feeds. The fp32 outputs are
    computed once; candidates run without ONNX Runtime's memory arena, so a long mixed-precision search over
    a large graph (the heads at 1008 px) returns its memory after each candidate."""

    def __init__(self, fp32_path: Path, feeds, instance_image_sizes=None):
        import onnxruntime as ort

        self.instance_image_sizes = instance_image_sizes
        reference = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in reference.get_inputs()]
        self.names = [o.name for o in reference.get_outputs()]
        self.feeds = feeds
        self.expected = [reference.run(None, self._run(feed)) for feed in feeds]

    def _run(self, feed):
        return {k: feed[k] for k in self.inputs}

    def __call__(self, quantized) -> dict[str, float]:
        """The worst output's figures (text features per valid token, other outputs per sample), with the
        heads' instance agreement under "instances" when image sizes were given."""
        import onnxruntime as ort

        from litetext.calibration.parity import instance_agreement, merge_parity, tensor_parity

        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = False
        candidate = ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
        parts: dict[str, list] = {}
        outputs = []
        for feed, expected in zip(self.feeds, self.expected):
            got_all = candidate.run(None, self._run(feed))
            outputs.append(got_all)
            for name, want, got in zip(self.names, expected, got_all):
                per_token = name == "text_features"
                mask = feed["attention_mask"] if per_token else None
                parts.setdefault(name, []).append(tensor_parity(want, got, mask, per_token))
        merged = [merge_parity(p) for p in parts.values()]
        worst = dict(min(merged, key=lambda f: (f["cosine_mean"], f["cosine_worst_1pct"])))
        if self.instance_image_sizes is not None:
            by_name = [[dict(zip(self.names, run)) for run in runs] for runs in (self.expected, outputs)]
            worst["instances"] = instance_agreement(*by_name, self.instance_image_sizes)
        return worst


def _median_ms(model, feeds, repeats: int = 3) -> float:
    """Median wall time of one calibration batch in ONNX Runtime (CPU), after one warm-up pass."""
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    runs = [{k: f[k] for k in inputs} for f in feeds]
    session.run(None, runs[0])
    times = []
    for _ in range(repeats):
        for run in runs:
            start = time.perf_counter()
            session.run(None, run)
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))

