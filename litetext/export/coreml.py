"""Core ML target: one ML Program package (`<graph>.mlpackage`, a folder) per graph.

    fp32   float32 weights and compute (CPU and GPU only: the Neural Engine computes in fp16)
    fp16   float16 weights and compute, float32 inputs and outputs
    w8     fp16 + weights int8, linear symmetric, one scale per output channel
    w4     fp16 + weights int4, linear symmetric, one scale per block of 32 input channels (iOS18 / macOS15);
           given calibration prompts, the layer groups 4 bits harm most stay at w8's 8 bits (measured in PyTorch)
    w8a8   w8 + the inputs of every Linear / Conv int8 per tensor, scales calibrated in PyTorch on real prompts

Conversion is torch.jit.trace -> coremltools (ML Program). What coremltools 9.0 needs to take these graphs with
torch 2.13 and numpy 2.4 is registered here, only while a conversion runs (`_converters`):

- `int` / `bool` of a one-element constant: coremltools calls `int(array)`, which numpy 2.4 refuses for
  arrays with ndim > 0 (the vision encoder's position-embedding interpolation stops there);
- `new_ones` (transformers' mask helpers, in the heads), which coremltools has no converter for.

fp16 guard: fp32 "infinity" sentinels (torch.finfo(float32).min, used by additive attention masks, and the open
side of a one-sided clamp) become -inf / inf when cast to fp16, and the text encoder's `(1 - mask) * min` then
gives 0 * -inf = NaN on every valid token. A MIL pass (`litetext::guard_fp16_constants`) runs before
coremltools' fp16 cast and replaces every constant of magnitude >= 1e30: by +-65504 where it bounds a clip (still
no bound in fp16), else by +-1e4 (exp(-1e4) is 0 in fp16 as in fp32, so masked attention is unchanged, and adding
it to a score cannot overflow); finite constants beyond the fp16 range saturate to +-65504. The package's
metadata lists what it replaced.

fp16 weights: coremltools folds a per-channel multiplication after a conv into the conv's weight; S0's layer
scales (1e-5 at initialisation) push the folded weights below fp16's smallest normal number. That fold is left
out (`UNFUSED_PASSES`), and every package lists the fp16 constants that are mostly subnormal (none, so far).

Core ML `predict` needs macOS. On Linux the parity of a package is measured with `simulated_runner`: the same
weight compression applied to the PyTorch graph (bit-identical scales and integers for every weight that
coremltools stores as it is in PyTorch; see `weight_agreement`), the same activation fake-quantization for
w8a8, computed in fp16 on the CPU, compared with fp32 PyTorch on real prompts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec, Tolerance
from litetext.runtimes.base import Runner

PRECISIONS = ("fp32", "fp16", "w8", "w4", "w8a8")
# Precisions that use Int8Calibration feeds (litetext.calibration.int8): w8a8 needs them (activation scales);
# w4 uses them, when given, to keep the layer groups 4 bits harm most at 8 bits.
CALIBRATED_PRECISIONS = ("w4", "w8a8")
FILE_SUFFIX = ".mlpackage"
DEPLOYMENT_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")
DEFAULT_DEPLOYMENT_TARGET = "iOS17"
IOS18_LEVEL = ("iOS18", "macOS15")  # per-block and 4-bit weights, several enumerated inputs
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
DEFAULT_COMPUTE_UNITS = "ALL"
BATCH_SIZES = (1, 2, 4, 8)
# Graphs exported at one fixed batch (the smallest asked for), and why: the runner feeds them chunk by chunk.
FIXED_BATCH = {
    "vision_encoder": "its windowed attention reshapes to rank 6, which Core ML accepts only where coremltools can "
                      "rewrite it with static shapes (expand_high_rank_reshape_and_transpose)",
    "heads": "the DETR decoder's box pooling splits the batch into one list item per image (unbind(0)), which "
             "needs a known batch",
}
WEIGHT_THRESHOLD = 2048  # coremltools' default: constants with more elements than this are compressed
# Constant folding stops at this many elements per result, graph by graph. The heads' first decoder layer takes
# its box position bias from learned reference boxes, so with the batch fixed coremltools folds it into a
# [1, 8, 201, 5184] constant (8.3M elements): 15.9 MiB of fp16 that w8 cannot compress, larger than the ops that
# compute it. Its position encodings (1.3M elements, [1, 256, 72, 72]) still fold to fp16 under the limit.
FOLD_LIMITS = {"heads": 4_000_000}
W4_BLOCK_SIZE = 32
SENSITIVITY_BATCHES = 4  # calibration batches (of 16 prompts) that rank w4's layer groups
SENTINEL = 1e30  # a constant this large is a stand-in for infinity (torch.finfo(float32).min/max)
MASK_MAGNITUDE = 1e4  # what the guard puts in its place
FP16_MAX = 65504.0
ACTIVATION_METHODS = ("minmax", "percentile")
PERCENTILE = 99.99
INSTALL_HINT = "coremltools is not installed; install it with: pip install 'litetext[coreml]'"
EXPORTER = {"converter": "coremltools.convert", "frontend": "torch.jit.trace", "format": "mlprogram"}
AUTHOR = "litetext"

# Parity gates of the compressed precisions, by graph (fp32 and fp16 use the graphs' own tolerances). Judged
# by direction, as the ONNX int8 gate is: mean cosine and the worst 1% of tokens / samples.
TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "text_encoder": {
        "w8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.999, min_cosine_worst_1pct=0.995),
        "w4": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.99, min_cosine_worst_1pct=0.97),
        "w8a8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.995, min_cosine_worst_1pct=0.98),
    },
    "vision_encoder": {
        "w8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.995, min_cosine_worst_1pct=0.99),
    },
    "heads": {
        "w8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.98, min_cosine_worst_1pct=0.95),
    },
}

DESCRIPTIONS = {
    "input_ids": "CLIP BPE token ids [batch, context] (int32): 49406, the prompt's tokens, 49407, then padding "
                 "(the bundle's tokenizer.json writes them)",
    "attention_mask": "1 for the prompt's tokens (start and end included), 0 for padding [batch, context] (int32)",
    "text_features": "per-token text features [batch, context, 256] (float32); padding positions carry no meaning",
    "pixel_values": "RGB image resized to size x size, (x / 255 - 0.5) / 0.5 [batch, 3, size, size] (float32)",
    "fpn_0": "vision features, 4x level [batch, 256, 4 size/14, 4 size/14] (float32)",
    "fpn_1": "vision features, 2x level [batch, 256, 2 size/14, 2 size/14] (float32)",
    "fpn_2": "vision features, 1x level [batch, 256, size/14, size/14] (float32)",
    "pred_logits": "per-query detection logits [batch, queries]; score = sigmoid(pred_logits) * sigmoid(presence_logits)",
    "pred_boxes": "per-query boxes, xyxy in 0..1 of the image [batch, queries, 4]",
    "pred_masks": "per-query mask logits [batch, queries, 4 size/14, 4 size/14]",
    "presence_logits": "logit that the prompt's concept is present in the image [batch, 1]",
}
GRAPH_DESCRIPTIONS = {
    "text_encoder": "SAM3 / SAM3-LiteText text encoder: token ids -> per-token text features",
    "vision_encoder": "SAM3 vision encoder (ViT + FPN): image -> three feature levels",
    "heads": "SAM3 heads (DETR encoder/decoder, mask decoder, presence): features -> detections",
}


# --------------------------------------------------------------------------------------------------- coremltools


def require_coremltools():
    """Import coremltools quietly (on Linux it logs that its native predict library is absent), or fail with
    the one line that says how to install it."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError:
        raise LitetextError(INSTALL_HINT) from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return coremltools


def can_predict() -> bool:
    """Whether this machine can run Core ML predictions (macOS with coremltools' native library)."""
    if sys.platform != "darwin":
        return False
    try:
        require_coremltools()
        import coremltools.libcoremlpython  # noqa: F401
    except (LitetextError, ImportError):
        return False
    return True


def _target(ct, name: str):
    if name not in DEPLOYMENT_TARGETS:
        raise LitetextError(f"unknown Core ML deployment target {name!r}; choose one of: {', '.join(DEPLOYMENT_TARGETS)}")
    return getattr(ct.target, name)


def check_options(precision: str, deployment_target: str, compute_units: str, batch_sizes) -> tuple[int, ...]:
    """Fail early, before any model work, on options that cannot make a package."""
    if precision not in PRECISIONS:
        raise LitetextError(f"the coreml target exports {', '.join(PRECISIONS)}, not {precision!r}")
    if deployment_target not in DEPLOYMENT_TARGETS:
        raise LitetextError(
            f"unknown Core ML deployment target {deployment_target!r}; choose one of: {', '.join(DEPLOYMENT_TARGETS)}"
        )
    if compute_units not in COMPUTE_UNITS:
        raise LitetextError(f"unknown Core ML compute units {compute_units!r}; choose one of: {', '.join(COMPUTE_UNITS)}")
    if precision == "w4" and deployment_target not in IOS18_LEVEL:
        raise LitetextError(
            f"w4 (4-bit per-block weights) needs Core ML 8: use --deployment-target iOS18 or macOS15, "
            f"not {deployment_target}"
        )
    sizes = tuple(sorted({int(b) for b in batch_sizes}))
    if not sizes or sizes[0] < 1:
        raise LitetextError(f"batch sizes must be positive integers, not {list(batch_sizes)}")
    return sizes


# ----------------------------------------------------------------------------------- converters and the fp16 guard


@contextlib.contextmanager
def _converters():
    """Register litetext's torch-op converters for the duration of one conversion, then restore coremltools'."""
    require_coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY as registry
    from coremltools.converters.mil.frontend.torch.utils import NUM_TO_NUMPY_DTYPE, TORCH_DTYPE_TO_NUM
    from coremltools.converters.mil.mil import types

    def scalar_cast(context, node, python_type, dtype_name):
        x = _get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const():
            value = np.asarray(x.val)
            if value.size != 1:
                raise ValueError(f"{node.kind} of a tensor with {value.size} elements")
            res = mb.const(val=python_type(value.reshape(-1)[0]), name=node.name)
        else:
            if len(x.shape) > 0:
                x = mb.squeeze(x=x, name=node.name + "_item")
            res = mb.cast(x=x, dtype=dtype_name, name=node.name)
        context.add(res, node.name)

    def to_int(context, node):
        scalar_cast(context, node, int, "int32")

    def to_bool(context, node):
        scalar_cast(context, node, bool, "bool")

    def numpy_dtype(value):
        value = getattr(value, "val", value)
        if isinstance(value, torch.dtype):
            return NUM_TO_NUMPY_DTYPE[TORCH_DTYPE_TO_NUM[value]]
        if isinstance(value, (int, np.integer)):
            return NUM_TO_NUMPY_DTYPE[int(value)]
        return None

    def new_ones(context, node):
        # tensor.new_ones(size, dtype=...): the dtype given, else the tensor's own.
        inputs = _get_inputs(context, node)
        x, size = inputs[0], inputs[1]
        dtype = numpy_dtype(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
        dtype = dtype or types.nptype_from_builtin(x.dtype)
        parts = size if isinstance(size, list) else [size]
        values = [getattr(p, "val", p) for p in parts]
        if all(v is not None for v in values):
            shape = [int(v) for value in values for v in np.asarray(value).reshape(-1)]
            context.add(mb.const(val=np.ones(shape, dtype=dtype), name=node.name), node.name)
            return
        shape = mb.concat(values=parts, axis=0) if isinstance(size, list) else size
        ones = mb.fill(shape=shape, value=1.0)
        name = types.builtin_to_string(types.numpy_type_to_builtin_type(dtype))
        context.add(mb.cast(x=ones, dtype=name, name=node.name), node.name)

    ours = {"int": to_int, "bool": to_bool, "new_ones": new_ones}
    saved = {name: registry.name_to_func_mapping.get(name) for name in ours}
    try:
        for name, func in ours.items():
            registry.set_func_by_name(func, name)
        yield
    finally:
        for name, func in saved.items():
            if func is None:
                registry.name_to_func_mapping.pop(name, None)
            else:
                registry.set_func_by_name(func, name)


GUARD_PASS = "litetext::guard_fp16_constants"
_guard_report: list[dict[str, Any]] = []  # filled by the pass during one conversion (conversions are serial)


def _register_guard_pass() -> None:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    if GUARD_PASS in PASS_REGISTRY:
        return

    @register_pass(namespace="litetext")
    class guard_fp16_constants(AbstractGraphPass):  # noqa: N801 (coremltools names passes by their class)
        """Before the fp16 cast: constants that fp16 cannot hold become values it can (see the module doc)."""

        def apply(self, prog):
            for function in prog.functions.values():
                self._block(function)

        def _block(self, block):
            for op in list(block.operations):
                for inner in op.blocks:
                    self._block(inner)
                if op.op_type != "const":
                    continue
                value = op.outputs[0].val
                if value is None or not np.issubdtype(np.asarray(value).dtype, np.floating):
                    continue
                array = np.asarray(value)
                magnitude = np.abs(array.astype(np.float64))
                if not (magnitude > FP16_MAX).any():
                    continue
                sentinel = magnitude >= SENTINEL
                consumers = sorted({c.op_type for c in op.outputs[0].child_ops})
                # a bound of a one-sided clamp means "no bound": fp16's largest; anything else (masks) 1e4
                stand_in = FP16_MAX if consumers == ["clip"] else MASK_MAGNITUDE
                fixed = np.where(sentinel, np.sign(array) * stand_in, np.clip(array, -FP16_MAX, FP16_MAX))
                fixed = fixed.astype(array.dtype)
                _guard_report.append({
                    "const": op.name, "elements": int(array.size), "sentinels": int(sentinel.sum()),
                    "saturated": int((~sentinel & (magnitude > FP16_MAX)).sum()),
                    "consumers": consumers, "replaced_by": stand_in,
                })
                with block:
                    new = mb.const(val=fixed if array.ndim else fixed.item(), before_op=op, name=op.name + "_fp16_safe")
                block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new,
                                                   no_check_var_types=True)
                block.remove_ops([op])


# coremltools folds a per-channel multiplication after a conv into the conv's weight. MobileCLIP's layer scales
# (1e-5 at initialisation, small after training) times the weights fall below fp16's smallest normal number
# (6.1e-5), where fp16 keeps few or no significant bits: the folded fc2 weights of S0's RepMixer blocks lose
# their precision. Kept as a separate multiplication (one per block), the weights stay as PyTorch has them.
UNFUSED_PASSES = ("common::fuse_conv_scale",)


def _pipeline(ct, fp16: bool, fold_limit: int | None = None):
    pipeline = ct.PassPipeline.DEFAULT
    if fold_limit is not None:
        pipeline.set_options("common::const_elimination", {"skip_const_by_size": str(fold_limit)})
    if fp16:
        _register_guard_pass()
        pipeline.remove_passes(list(UNFUSED_PASSES))
        names = list(pipeline.passes)
        pipeline.insert_pass(names.index("common::add_fp16_cast"), GUARD_PASS)
    return pipeline


FP16_SMALLEST_NORMAL = float(np.finfo(np.float16).tiny)


def _operations(program):
    """Every MIL operation of every function, the ops of nested blocks before the op that holds them."""

    def walk(block):
        for op in block.operations:
            for inner in op.blocks:
                yield from walk(inner)
            yield op

    for function in program.functions.values():
        yield from walk(function)


def fp16_subnormal_constants(program, fraction: float = 0.01) -> list[dict[str, Any]]:
    """fp16 constants with more than `fraction` of their non-zero values below fp16's smallest normal number
    (where fp16 keeps few significant bits): what an fp16 package loses precision on."""
    found = []
    for op in _operations(program):
        if op.op_type != "const":
            continue
        value = op.outputs[0].val
        if value is None or np.asarray(value).dtype != np.float16 or np.size(value) <= WEIGHT_THRESHOLD:
            continue
        magnitude = np.abs(np.asarray(value, dtype=np.float32))
        nonzero = magnitude[magnitude > 0]
        if nonzero.size and np.mean(nonzero < FP16_SMALLEST_NORMAL) > fraction:
            found.append({"const": op.name, "elements": int(np.size(value)),
                          "subnormal_fraction": float(np.mean(nonzero < FP16_SMALLEST_NORMAL))})
    return found


# ------------------------------------------------------------------------------------------------------ export


def export_graph(module: torch.nn.Module, spec: GraphSpec, example: dict, path: Path, precision: str,
                 calibration=None, *, deployment_target: str = DEFAULT_DEPLOYMENT_TARGET,
                 compute_units: str = DEFAULT_COMPUTE_UNITS, batch_sizes=BATCH_SIZES,
                 metadata: dict[str, Any] | None = None) -> Path:
    """Trace `module` on `example` (numpy feed, batch 2) and write an ML Program package at `path`.

    w8a8 needs `calibration` (litetext.calibration.int8.Int8Calibration; its `method` is minmax or percentile):
    the activation scales are calibrated in PyTorch and written to `calibration.report`, which
    `simulated_runner` reuses. `metadata` adds entries to the package's metadata (weights, licence, ...)."""
    ct = require_coremltools()
    sizes = check_options(precision, deployment_target, compute_units, batch_sizes)
    path = Path(path)
    if spec.name in FIXED_BATCH:
        sizes = sizes[:1]
    if precision == "w8a8" and calibration is None:
        raise LitetextError(f"{precision} export needs calibration prompts")

    work = module.eval()  # tracing does not change it; w8a8 hooks go on a copy
    scales = None
    keep_8bit: list[str] = []
    if precision == "w4" and calibration is not None:
        calibration.report = {**(calibration.report or {}), **search_w4(module, spec, calibration)}
        keep_8bit = calibration.report["layers_kept_8bit"]
    if precision == "w8a8":
        work = copy.deepcopy(module).eval()
        scales = calibrate_activations(work, spec, calibration.feeds, calibration.method)
        calibration.report = {**(calibration.report or {}), **activation_report(scales, calibration)}
        attach_activation_quantizers(work, scales, traceable=True)
    if spec.name in FIXED_BATCH:  # trace at the batch the package takes: nothing of batch 2 baked in
        example = {k: np.concatenate([v] * -(-sizes[0] // len(v)))[: sizes[0]] for k, v in example.items()}
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[name])) for name in spec.input_names)
    fp16 = precision != "fp32"
    mha = torch.backends.mha.get_fastpath_enabled()
    _guard_report.clear()
    quiet = logging.getLogger("coremltools")  # its int64 -> int32 and tuple-output notes are expected here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel has no converter
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(work, args, check_trace=False)
            with _converters():
                model = ct.convert(
                    traced,
                    inputs=_input_types(ct, spec, args, sizes, deployment_target),
                    outputs=[ct.TensorType(name=name, dtype=np.float32) for name in spec.output_names],
                    convert_to="mlprogram",
                    minimum_deployment_target=_target(ct, deployment_target),
                    compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
                    compute_units=getattr(ct.ComputeUnit, compute_units),
                    pass_pipeline=_pipeline(ct, fp16, FOLD_LIMITS.get(spec.name)),
                    skip_model_load=True,
                )
    except LitetextError:
        raise
    except Exception as e:  # coremltools raises many types; say which graph stopped where
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LitetextError(f"Core ML conversion of {spec.name} failed: {type(e).__name__}: {first}") from e
    finally:
        torch.backends.mha.set_fastpath_enabled(mha)
        quiet.setLevel(level)
    guard = list(_guard_report)
    subnormal = fp16_subnormal_constants(model._mil_program) if fp16 else []
    compressed: list[str] = []
    if precision in ("w8", "w4", "w8a8"):
        model, compressed = _compress(ct, model, precision, module, keep_8bit,
                                      deployment_target=deployment_target, compute_units=compute_units)
    _describe(model, spec, precision, deployment_target, compute_units, sizes, guard, subnormal, compressed, scales,
              metadata, keep_8bit)
    model.save(str(path))
    return path


def _input_types(ct, spec: GraphSpec, args, sizes, deployment_target):
    """Batch axis: enumerated sizes (the Neural Engine takes them; flexible ranges may run elsewhere). Core ML 7
    (iOS17 / macOS14) enumerates one input only: graphs with several inputs get a bounded range there."""
    several = len(spec.inputs) > 1
    types = []
    for tensor, arg in zip(spec.inputs, args):
        rest = tuple(arg.shape[1:])
        dynamic = isinstance(tensor.shape[0], str)
        if not dynamic or len(sizes) == 1:
            shape = (sizes[0] if dynamic else arg.shape[0], *rest)
        elif several and deployment_target not in IOS18_LEVEL:
            shape = ct.Shape(shape=(ct.RangeDim(lower_bound=sizes[0], upper_bound=sizes[-1], default=sizes[0]), *rest))
        else:
            shape = ct.EnumeratedShapes(shapes=[(b, *rest) for b in sizes], default=(sizes[0], *rest))
        dtype = np.int32 if tensor.dtype.startswith("int") else np.float32
        types.append(ct.TensorType(name=tensor.name, shape=shape, dtype=dtype))
    return types


def weight_roles(program) -> dict[str, tuple[int, int]]:
    """The constants coremltools stores as layer weights, with (output axis, input axis): a linear's or conv's
    weight, a conv_transpose's, the table of a gather (an embedding), a matmul's constant operand. Biases,
    norms, masks and position encodings are not weights here and stay fp16."""
    roles: dict[str, tuple[int, int]] = {}
    for op in _operations(program):
        if op.op_type != "const":
            continue
        var = op.outputs[0]
        value = var.val
        if value is None or np.ndim(value) < 2 or np.size(value) <= WEIGHT_THRESHOLD:
            continue
        if not np.issubdtype(np.asarray(value).dtype, np.floating):
            continue
        found = set()
        for child in var.child_ops:
            if child.op_type in ("linear", "conv") and child.weight is var:
                found.add((0, 1))
            elif child.op_type == "conv_transpose" and child.weight is var:
                found.add((1, 0))
            elif child.op_type == "gather" and child.x is var:
                found.add((0, 1))
            elif child.op_type == "matmul" and child.y is var:
                rank = var.rank
                found.add((rank - 2, rank - 1) if child.transpose_y.val else (rank - 1, rank - 2))
            else:
                found.add(None)
        if len(found) == 1 and None not in found:
            roles[op.name] = found.pop()
    return roles


def _compress(ct, model, precision: str, module: torch.nn.Module | None = None, keep_8bit=(), *,
              deployment_target: str = DEFAULT_DEPLOYMENT_TARGET, compute_units: str = DEFAULT_COMPUTE_UNITS):
    import coremltools.optimize.coreml as cto

    eight = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                        weight_threshold=WEIGHT_THRESHOLD)
    four = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                       block_size=W4_BLOCK_SIZE, weight_threshold=WEIGHT_THRESHOLD)
    names = sorted(weight_roles(model._mil_program))
    configs = {n: eight for n in names}
    if precision == "w4":
        layers = match_weights(model._mil_program, module) if keep_8bit else {}
        configs = {n: eight if layer_group(layers.get(n, "")) in keep_8bit else four for n in names}
    optimization = cto.OptimizationConfig(global_config=None, op_name_configs=configs)
    # The compression pass alone on the converted program: cto.linear_quantize_weights would run coremltools'
    # whole default pipeline again, folding what FOLD_LIMITS kept as operations back into constants.
    pipeline = ct.PassPipeline.EMPTY
    pipeline.append_pass("compression::linear_quantize_weights")
    pipeline.set_options("compression::linear_quantize_weights", {"config": optimization})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = ct.convert(model._mil_program, convert_to="mlprogram", pass_pipeline=pipeline,
                                minimum_deployment_target=_target(ct, deployment_target),
                                compute_units=getattr(ct.ComputeUnit, compute_units), skip_model_load=True)
    return compressed, names


def _describe(model, spec, precision, deployment_target, compute_units, sizes, guard, subnormal, compressed, scales,
              extra, keep_8bit=()):
    from importlib.metadata import PackageNotFoundError, version

    try:
        litetext_version = version("litetext")
    except PackageNotFoundError:
        litetext_version = "unknown"
    extra = dict(extra or {})
    context = next((int(t.shape[1]) for t in spec.inputs if t.name == "input_ids"), None)
    context = context or next((int(t.shape[1]) for t in spec.outputs if t.name == "text_features"), None)
    model.author = AUTHOR
    model.license = str(extra.pop("license", "unspecified: see the weights' source"))
    model.version = litetext_version
    model.short_description = (f"{GRAPH_DESCRIPTIONS.get(spec.name, spec.name)}. {precision}; "
                               f"weights: {extra.get('weights', 'unspecified')}")
    for tensor in spec.inputs:
        model.input_description[tensor.name] = DESCRIPTIONS.get(tensor.name, tensor.name)
    for tensor in spec.outputs:
        model.output_description[tensor.name] = DESCRIPTIONS.get(tensor.name, tensor.name)
    entries = {
        "graph": spec.name,
        "precision": precision,
        "context_length": context,
        "deployment_target": deployment_target,
        "compute_units": compute_units,
        "batch_sizes": list(sizes),
        **({"batch_fixed_because": FIXED_BATCH[spec.name]} if spec.name in FIXED_BATCH else {}),
        "weights_compressed": len(compressed),
        "fp16_guard": guard,
        "fp16_subnormal_constants": subnormal,
        **({"activation_scales": len(scales)} if scales else {}),
        **({"layers_kept_8bit": keep_8bit} if precision == "w4" else {}),
        **extra,
    }
    for key, value in entries.items():
        if value is None:
            continue
        model.user_defined_metadata[f"com.litetext.{key}"] = value if isinstance(value, str) else json.dumps(value)


def write_metadata(path: str | Path, entries: dict[str, Any]) -> None:
    """Add `com.litetext.<key>` entries (e.g. parity figures measured after export) to a saved package, in place:
    only the package's model description changes; its weights are not rewritten."""
    require_coremltools()
    from coremltools.proto import Model_pb2

    spec_file = _spec_file(Path(path))
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    for key, value in entries.items():
        spec.description.metadata.userDefined[f"com.litetext.{key}"] = value if isinstance(value, str) else json.dumps(value)
    spec_file.write_bytes(spec.SerializeToString())


def _spec_file(path: Path) -> Path:
    manifest = path / "Manifest.json"
    if not manifest.is_file():
        raise LitetextError(f"{path} is not an .mlpackage (no Manifest.json)")
    data = json.loads(manifest.read_text())
    root = data["rootModelIdentifier"]
    return path / "Data" / data["itemInfoEntries"][root]["path"]


def files_of(path: Path) -> list[Path]:
    """Every file inside the package (a folder), in a stable order: what `bytes` in the manifest sums."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def open_runner(path: Path, spec: GraphSpec, precision: str, compute_units: str | None = None):
    """A runner that predicts with Core ML. Needs macOS; elsewhere measure with `simulated_runner`."""
    from litetext.runtimes.coreml_runner import CoreMLRunner

    return CoreMLRunner(path, spec, precision, compute_units=compute_units)


# ------------------------------------------------------------------------------------------------ inspection


def load_package_spec(path: str | Path):
    """The package's protobuf spec, read without compiling or loading the model (works on Linux)."""
    ct = require_coremltools()
    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise LitetextError(f"{path} is not an .mlpackage (no Manifest.json)")
    return ct.utils.load_spec(str(path))


def _proto_ops(block, counter: Counter) -> None:
    for op in block.operations:
        counter[op.type] += 1
        for inner in op.blocks:
            _proto_ops(inner, counter)


def inspect_package(path: str | Path) -> dict[str, Any]:
    """What a package declares: inputs and outputs (names, types, shapes, enumerated batch sizes), metadata,
    the ML Program's operations by type, specification version, and size on disk."""
    spec = load_package_spec(path)
    from coremltools.proto import FeatureTypes_pb2

    data_types = {v: k for k, v in FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.items()}

    def feature(f):
        array = f.type.multiArrayType
        entry = {"name": f.name, "dtype": data_types.get(array.dataType, str(array.dataType)),
                 "shape": list(array.shape), "description": f.shortDescription}
        if array.HasField("enumeratedShapes"):
            entry["enumerated"] = [list(s.shape) for s in array.enumeratedShapes.shapes]
        if array.HasField("shapeRange"):
            entry["range"] = [[r.lowerBound, r.upperBound] for r in array.shapeRange.sizeRanges]
        return entry

    ops: Counter = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            _proto_ops(block, ops)
    meta = spec.description.metadata
    return {
        "specification_version": spec.specificationVersion,
        "inputs": [feature(f) for f in spec.description.input],
        "outputs": [feature(f) for f in spec.description.output],
        "author": meta.author, "license": meta.license, "version": meta.versionString,
        "short_description": meta.shortDescription,
        "metadata": dict(meta.userDefined),
        "ops": dict(ops),
        "bytes": sum(f.stat().st_size for f in files_of(Path(path))),
    }


def load_program(path: str | Path):
    """A saved package's ML Program with its weights, as coremltools' MIL (no compilation, no predict)."""
    require_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    path = Path(path)
    spec = load_package_spec(path)
    weights_dir = _spec_file(path).parent / "weights"
    return load_milproto(spec, specification_version=spec.specificationVersion, file_weights_dir=str(weights_dir))


def package_weights(path: str | Path) -> dict[str, dict[str, Any]]:
    """Every compressed weight of a package, decompressed with coremltools' own code (no predict needed):
    name -> {"values": fp16 array, "op": constexpr op type, "integers": stored integers, "scale": scales}."""
    program = load_program(path)
    found: dict[str, dict[str, Any]] = {}
    for op in _operations(program):
        if op.op_type in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"):
            integers = (op.quantized_data if op.op_type == "constexpr_affine_dequantize" else op.data).val
            found[op.name] = {"values": np.asarray(op.materialized_val_inference()), "op": op.op_type,
                              "integers": np.asarray(integers), "scale": np.asarray(op.scale.val)}
        elif op.op_type.startswith("constexpr_"):
            found[op.name] = {"values": np.asarray(op.materialized_val_inference()), "op": op.op_type}
    return found


# --------------------------------------------------------------------------------- compression in PyTorch


def _weight_modules(module: torch.nn.Module):
    """(name, module, output axis, input axis) for the layers whose weights Core ML compresses."""
    for name, child in module.named_modules():
        if isinstance(child, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
            yield name, child, 1, 0
        elif isinstance(child, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)):
            yield name, child, 0, 1


def quantize_weight(weight: torch.Tensor, bits: int, out_axis: int = 0, in_axis: int = 1,
                    block: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Core ML's linear symmetric weight quantization, in fp16 arithmetic as coremltools does it on an fp16
    program: scale = 2 max|w| / (2^bits - 2) per output channel (and per `block` input channels), integers
    round-half-even(w / scale) clipped to +-(2^(bits-1) - 1), value integer * scale. Returns the dequantized fp16
    weight and the integers (both shaped as `weight`), or None where coremltools skips the tensor (input
    channels not divisible by `block`)."""
    w = weight.detach().to(torch.float16)
    qmax = 2 ** (bits - 1) - 1
    if block is not None and w.shape[in_axis] % block != 0:
        return None
    order = [out_axis, in_axis] + [i for i in range(w.ndim) if i not in (out_axis, in_axis)]
    moved = w.permute(order)  # [out, in, ...]
    out_n, in_n = moved.shape[0], moved.shape[1]
    per = block if block is not None else in_n
    grouped = moved.reshape(out_n, in_n // per, per, *moved.shape[2:])
    reduce = tuple(i for i in range(grouped.ndim) if i not in (0, 1))
    max_abs = grouped.abs().amax(dim=reduce, keepdim=True)
    scale = (max_abs + max_abs) / (2 * qmax)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    integers = torch.round(grouped / safe).clamp(-qmax, qmax)
    values = torch.where(scale == 0, torch.zeros_like(grouped), integers * scale)
    inverse = [order.index(i) for i in range(w.ndim)]

    def back(t):
        return t.reshape(moved.shape).permute(inverse).contiguous()

    return back(values), back(integers).to(torch.int8)


def _run_with_hooks(module: torch.nn.Module, spec: GraphSpec, feeds, hooks) -> None:
    """Run `module` on every feed so its forward hooks observe real activations, then remove the hooks."""
    try:
        with torch.no_grad():
            for feed in feeds:
                module(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in spec.input_names])
    finally:
        for hook in hooks:
            hook.remove()


def layer_group(name: str) -> str:
    """The group a layer's weight belongs to for w4's mixed precision: the path up to a numbered layer
    ('text.layers.3.mlp.fc1' -> 'text.layers.3'), else the layer itself ('text.embeddings.token_embedding')."""
    match = re.match(r"(.*?layers\.\d+)(\.|$)", name)
    return match.group(1) if match else name


def compress_weights_(module: torch.nn.Module, precision: str,
                      keep_8bit: tuple[str, ...] | list[str] = ()) -> dict[str, tuple[torch.Tensor, int]]:
    """Replace, in place, the weights Core ML compresses at `precision` by their dequantized values (fp16).
    w4: the layer groups in `keep_8bit` get w8's per-channel 8 bits instead. Returns {layer name: (its integers,
    its output axis)} for the layers changed."""
    if precision not in ("w8", "w4", "w8a8"):
        return {}
    changed: dict[str, tuple[torch.Tensor, int]] = {}
    with torch.no_grad():
        for name, child, out_axis, in_axis in _weight_modules(module):
            weight = child.weight
            if weight.ndim < 2 or weight.numel() <= WEIGHT_THRESHOLD:
                continue
            four = precision == "w4" and layer_group(name) not in keep_8bit
            result = quantize_weight(weight, 4 if four else 8, out_axis, in_axis, W4_BLOCK_SIZE if four else None)
            if result is None:
                continue
            weight.copy_(result[0].to(weight.dtype))
            changed[name] = (result[1], out_axis)
    return changed


def match_weights(program, module: torch.nn.Module) -> dict[str, str]:
    """Which PyTorch layer each weight constant of an (uncompressed) fp16 program comes from: the layer whose
    fp16 weight it equals, else (a fold of a BatchNorm or scale, one factor per output channel) the layer of the
    same shape whose rows it is proportional to."""
    roles = weight_roles(program)
    weights = [(n, m.weight.detach().to(torch.float16).numpy()) for n, m, _, _ in _weight_modules(module)]
    consts = {op.name: np.asarray(op.outputs[0].val) for op in _operations(program)
              if op.op_type == "const" and op.name in roles}
    matched = {}
    for const, value in consts.items():
        same = [(n, w) for n, w in weights if w.shape == value.shape]
        exact = [n for n, w in same if np.array_equal(w, value.astype(np.float16))]
        if exact:
            matched[const] = exact[0]
            continue
        best, score = None, 0.0
        for n, w in same:
            a = w.reshape(w.shape[0], -1).astype(np.float64)
            b = value.reshape(value.shape[0], -1).astype(np.float64)
            den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            cos = np.abs((a * b).sum(1)) / np.maximum(den, 1e-30)
            if cos.min() > score:
                best, score = n, float(cos.min())
        if best is not None and score > 0.999:
            matched[const] = best
    return matched


def search_w4(module: torch.nn.Module, spec: GraphSpec, calibration) -> dict[str, Any]:
    """w4's mixed precision, measured on the calibration feeds only: if all-4-bit misses the calibration target
    (calibration.target_cosine_mean / target_cosine_worst_1pct), the layer groups whose 4 bits cost most stay
    at 8 bits per channel, most sensitive first, until it is met. Sensitivity of a group: the error with that
    group alone in 4 bits (the rest in 8), on the first SENSITIVITY_BATCHES calibration batches (fp32 compute:
    it ranks weight errors, and is several times faster than fp16 emulation on a CPU)."""
    reference = _CalibrationReference(module, spec, calibration.feeds)
    ranking = _CalibrationReference(module, spec, calibration.feeds[:SENSITIVITY_BATCHES])
    groups = sorted({layer_group(n) for n, m, _, _ in _weight_modules(module) if m.weight.numel() > WEIGHT_THRESHOLD})

    def figures(keep, on=reference):
        runner = SimulatedCoreMLRunner(module, spec, "w4", None, keep_8bit=keep, compute=torch.float32)
        return on.parity(runner)

    def meets(f):
        return (f["cosine_mean"] >= calibration.target_cosine_mean
                and f["cosine_worst_1pct"] >= calibration.target_cosine_worst_1pct)

    current = figures(())
    kept: list[str] = []
    sensitivity: dict[str, float] = {}
    if not meets(current):
        for group in groups:
            sensitivity[group] = 1.0 - figures([g for g in groups if g != group], ranking)["cosine_mean"]
        for group in sorted(sensitivity, key=sensitivity.get, reverse=True):
            kept.append(group)
            current = figures(kept)
            if meets(current):
                break
    return {"method": "4-bit per block everywhere; layer groups kept at 8 bits where the calibration prompts need it",
            "calibration_prompts": getattr(calibration, "prompts", 0), "calibration_parity": current,
            "target": {"cosine_mean": calibration.target_cosine_mean,
                       "cosine_worst_1pct": calibration.target_cosine_worst_1pct},
            "layers_kept_8bit": kept, "layer_sensitivity": sensitivity}


class _CalibrationReference:
    """fp32 PyTorch outputs on calibration feeds, computed once, and parity of a runner against them (the worst
    output's figures)."""

    def __init__(self, module, spec, feeds):
        from litetext.runtimes.torch_runner import TorchRunner

        self.feeds = [{n: f[n] for n in spec.input_names if n in f} | {k: v for k, v in f.items() if k == "attention_mask"}
                      for f in feeds]
        runner = TorchRunner(module, spec)
        self.wants = [runner.infer(f) for f in self.feeds]

    def parity(self, runner) -> dict[str, float]:
        from litetext.calibration.parity import merge_parity, tensor_parity

        parts: dict[str, list] = {}
        for feed, want in zip(self.feeds, self.wants):
            got = runner.infer(feed)
            for name in want:
                per_token = name == "text_features"
                valid = feed.get("attention_mask") if per_token else None
                parts.setdefault(name, []).append(tensor_parity(want[name], got[name], valid, per_token))
        merged = [merge_parity(p) for p in parts.values()]
        return min(merged, key=lambda f: (f["cosine_mean"], f["cosine_worst_1pct"]))


def _quantizable(module: torch.nn.Module):
    """Layers whose input w8a8 quantizes: every Linear and Conv (not embeddings: their input is token ids)."""
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
             torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    return [(name, child) for name, child in module.named_modules() if isinstance(child, kinds)]


def calibrate_activations(module: torch.nn.Module, spec: GraphSpec, feeds: list[dict[str, np.ndarray]],
                          method: str = "minmax") -> dict[str, float]:
    """Per-tensor symmetric int8 scales for the input of every Linear / Conv, from fp32 PyTorch runs on `feeds`:
    max |x| (minmax) or its 99.99th percentile (percentile), divided by 127, rounded to fp16 as Core ML stores it."""
    if method not in ACTIVATION_METHODS:
        raise LitetextError(
            f"the coreml target calibrates activations with {' or '.join(ACTIVATION_METHODS)}, not {method!r}"
        )
    if not feeds:
        raise LitetextError("w8a8 needs calibration prompts; none were given")
    stats: dict[str, list[float]] = {}
    hooks = []
    for name, child in _quantizable(module):
        def observe(_module, inputs, name=name):
            x = inputs[0].detach().abs().float()
            value = float(x.max()) if method == "minmax" else float(torch.quantile(x.flatten()[: 1 << 24], PERCENTILE / 100))
            stats.setdefault(name, []).append(value)
        hooks.append(child.register_forward_pre_hook(observe))
    _run_with_hooks(module, spec, feeds, hooks)
    scales = {}
    for name, values in stats.items():
        top = max(values)
        scale = float(np.float16(top / 127.0)) if top > 0 else float(np.float16(1.0 / 127.0))
        scales[name] = scale if scale > 0 else float(np.finfo(np.float16).smallest_subnormal)
    return scales


def attach_activation_quantizers(module: torch.nn.Module, scales: dict[str, float], traceable: bool) -> list:
    """Quantize-dequantize the input of each calibrated layer. `traceable`: torch.quantize_per_tensor and
    dequantize, which coremltools converts to MIL quantize / dequantize (int8 activations on the Neural
    Engine); else the same arithmetic in the input's dtype, for the PyTorch simulation."""
    hooks = []
    for name, child in _quantizable(module):
        if name not in scales:
            continue
        scale = scales[name]

        def quantize(_module, inputs, scale=scale):
            x = inputs[0]
            if traceable:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    q = torch.dequantize(torch.quantize_per_tensor(x.float(), scale, 0, torch.qint8)).to(x.dtype)
            else:
                s = torch.tensor(scale, dtype=x.dtype)
                q = torch.clamp(torch.round(x / s), -128, 127) * s
            return (q, *inputs[1:])

        hooks.append(child.register_forward_pre_hook(quantize))
    return hooks


def activation_report(scales: dict[str, float], calibration) -> dict[str, Any]:
    return {
        "method": calibration.method,
        "weights": "int8 linear symmetric per output channel (Core ML constexpr)",
        "activations": "int8 symmetric per tensor at the input of every Linear / Conv (MIL quantize/dequantize)",
        "calibration_prompts": getattr(calibration, "prompts", 0),
        "calibrated_in": "PyTorch fp32",
        "activation_scales": scales,
    }


class SimulatedCoreMLRunner(Runner):
    """The PyTorch graph with the package's compression applied (weights dequantized exactly as Core ML stores
    them; w8a8 activations quantized with the package's scales), computed in fp16 (fp32 for fp32)."""

    runtime = "coreml-simulated"

    def __init__(self, module: torch.nn.Module, spec: GraphSpec, precision: str, scales: dict[str, float] | None,
                 keep_8bit=(), compute: torch.dtype | None = None):
        super().__init__(spec, precision)
        self.dtype = compute or (torch.float32 if precision == "fp32" else torch.float16)
        work = copy.deepcopy(module).eval()
        self.compressed = sorted(compress_weights_(work, precision, keep_8bit))
        self.keep_8bit = list(keep_8bit)
        self.module = work.to(self.dtype)
        self.scales = scales or {}
        attach_activation_quantizers(self.module, self.scales, traceable=False)

    @torch.inference_mode()
    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = []
        for tensor in self.spec.inputs:
            value = torch.from_numpy(np.ascontiguousarray(feed[tensor.name]))
            args.append(value.to(self.dtype) if value.is_floating_point() else value)
        out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().numpy() for o in out]


def simulated_runner(module: torch.nn.Module, spec: GraphSpec, precision: str, calibration=None,
                     scales: dict[str, float] | None = None) -> SimulatedCoreMLRunner:
    """A Runner computing what the Core ML package computes, in PyTorch, for parity where Core ML cannot run.
    w8a8 takes its activation scales from `scales`, else from `calibration.report` (written by export_graph),
    else calibrates on `calibration.feeds` as export_graph does; w4 keeps at 8 bits the layer groups
    `calibration.report["layers_kept_8bit"]` names. `module` itself is never modified."""
    if precision not in PRECISIONS:
        raise LitetextError(f"the coreml target exports {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "w4":
        report = getattr(calibration, "report", None) or {}
        return SimulatedCoreMLRunner(module, spec, precision, None, keep_8bit=report.get("layers_kept_8bit", ()))
    if precision == "w8a8" and scales is None:
        report = getattr(calibration, "report", None) or {}
        scales = report.get("activation_scales")
        if scales is None:
            if calibration is None:
                raise LitetextError("simulating w8a8 needs the calibration (or the scales) the package was made with")
            scales = calibrate_activations(copy.deepcopy(module).eval(), spec, calibration.feeds, calibration.method)
    return SimulatedCoreMLRunner(module, spec, precision, scales if precision == "w8a8" else None)


def weight_agreement(path: str | Path, module: torch.nn.Module, precision: str, keep_8bit=()) -> dict[str, Any]:
    """How exactly the simulation reproduces the package's compressed weights.

    Each compressed constant of the package is matched to a simulated PyTorch weight of the same shape. Where
    coremltools stores the PyTorch weight as it is, values must be bit-identical. Where it stores a fold (a
    BatchNorm or a layer scale merged into the preceding conv: one factor per output channel), no PyTorch tensor
    has its values, but symmetric quantization commutes with a per-channel factor, so its integers must equal
    the simulated ones up to each channel's sign (fp16 rounding of the folded weight can move a few by one)."""
    package = package_weights(path)
    work = copy.deepcopy(module).eval()
    changed = compress_weights_(work, precision, keep_8bit)
    modules = dict(work.named_modules())
    simulated = [(n, modules[n].weight.detach().to(torch.float16).numpy(), ints.numpy(), axis)
                 for n, (ints, axis) in changed.items()]
    exact, folded, unmatched = [], [], []
    elements = exact_elements = 0
    for name, entry in package.items():
        values = entry["values"].astype(np.float16)
        elements += values.size
        candidates = [c for c in simulated if c[1].shape == values.shape]
        if any(np.array_equal(w, values) for _, w, _, _ in candidates):
            exact.append(name)
            exact_elements += values.size
            continue
        if not candidates or "integers" not in entry:
            unmatched.append(name)
            continue
        stored = np.abs(entry["integers"].astype(np.int32).reshape(values.shape))
        best = max(candidates, key=lambda c: float(np.mean(np.abs(c[2].astype(np.int32)) == stored)))
        ints = np.abs(best[2].astype(np.int32))
        folded.append({
            "const": name, "layer": best[0],
            "integers_equal_fraction": float(np.mean(ints == stored)),
            "integers_max_difference": int(np.abs(ints - stored).max()),
        })
    return {
        "package_compressed": len(package), "simulated_compressed": len(simulated),
        "bit_exact": len(exact), "bit_exact_elements_fraction": exact_elements / max(elements, 1),
        "folded": folded, "unmatched": unmatched,
    }


def measure_parity(reference: Runner, candidate: Runner, batches: list[dict[str, np.ndarray]]) -> dict[str, dict]:
    """Parity of `candidate` against `reference` per output over `batches`: text features per valid token,
    other outputs per sample (litetext.calibration.parity)."""
    from litetext.calibration.parity import merge_parity, tensor_parity

    parts: dict[str, list] = {}
    for feed in batches:
        want, got = reference.infer(feed), candidate.infer(feed)
        for name in want:
            per_token = name == "text_features"
            valid = feed.get("attention_mask") if per_token else None
            parts.setdefault(name, []).append(tensor_parity(want[name], got[name], valid, per_token))
    return {name: merge_parity(p) for name, p in parts.items()}


def fp16_headroom(module: torch.nn.Module, spec: GraphSpec, feeds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Activation ranges that matter in fp16, from fp32 PyTorch on real feeds: the largest |x - mean| entering
    each LayerNorm (its square overflows fp16 past 255.9 if a device computes the variance in fp16) and the
    largest |x| leaving any Linear / Conv (fp16 holds 65504). Returns the worst of each and where."""
    deviation: dict[str, float] = {}
    largest: dict[str, float] = {}
    hooks = []
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.LayerNorm):
            def norm_hook(_m, inputs, name=name):
                x = inputs[0].detach().float()
                value = float((x - x.mean(-1, keepdim=True)).abs().max())
                deviation[name] = max(deviation.get(name, 0.0), value)
            hooks.append(child.register_forward_pre_hook(norm_hook))
    for name, child in _quantizable(module):
        def out_hook(_m, _inputs, output, name=name):
            largest[name] = max(largest.get(name, 0.0), float(output.detach().abs().max()))
        hooks.append(child.register_forward_hook(out_hook))
    _run_with_hooks(module, spec, feeds, hooks)
    worst_norm = max(deviation, key=deviation.get) if deviation else None
    worst_out = max(largest, key=largest.get) if largest else None
    return {
        "layer_norm_max_deviation": deviation.get(worst_norm, 0.0), "layer_norm_worst": worst_norm,
        "layer_norm_limit": float(np.sqrt(FP16_MAX)),
        "layer_output_max_abs": largest.get(worst_out, 0.0), "layer_output_worst": worst_out,
        "fp16_max": FP16_MAX,
    }


def parity_runtime(compute_units: str | None = None) -> str:
    """Which runtime measures an export's parity on this machine."""
    if can_predict():
        return f"Core ML predict on macOS (compute units {compute_units or DEFAULT_COMPUTE_UNITS})"
    return ("simulated in PyTorch: the package's weight compression (and w8a8 activation scales) applied to the "
            "PyTorch graph, fp16 compute on the CPU; Core ML cannot predict on this machine")


def graph_manifest(path: Path, spec: GraphSpec, precision: str) -> dict[str, Any]:
    """What the bundle manifest records for a Core ML graph, read back from the package."""
    info = inspect_package(path)
    meta = info["metadata"]

    def entry(key):
        value = meta.get(f"com.litetext.{key}")
        try:
            return json.loads(value) if value is not None else None
        except json.JSONDecodeError:
            return value

    return {"coreml": {
        "format": "mlprogram", "specification_version": info["specification_version"],
        "deployment_target": entry("deployment_target"), "compute_units": entry("compute_units"),
        "batch_sizes": entry("batch_sizes"), "batch_fixed_because": entry("batch_fixed_because"),
        "weights_compressed": entry("weights_compressed"), "layers_kept_8bit": entry("layers_kept_8bit"),
        "compression_ops": {k: v for k, v in info["ops"].items() if k.startswith("constexpr") or k in ("quantize", "dequantize")},
        "fp16_guard": entry("fp16_guard"), "fp16_subnormal_constants": entry("fp16_subnormal_constants"),
        "parity_runtime": parity_runtime(entry("compute_units")),
        "files": len(files_of(path)),
    }}
