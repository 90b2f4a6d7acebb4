"""Conversion: torch.jit.trace -> coremltools ML Program, with the converters coremltools 9.0 lacks and the
fp16 guard pass (see the package docstring)."""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litetext.errors import LitetextError
from litetext.export.coreml.compress import (_compress, activation_report, attach_activation_quantizers,
                                             calibrate_activations)
from litetext.export.coreml.describe import _describe, _operations
from litetext.export.coreml.options import (BATCH_SIZES, DEFAULT_DEPLOYMENT_TARGET, FIXED_BATCH, FOLD_LIMITS, FP16_MAX,
                                            IOS18_LEVEL, MASK_MAGNITUDE, SENTINEL, WEIGHT_THRESHOLD, _target,
                                            check_options)
from litetext.export.coreml.simulate import search_w4
from litetext.models.graphs import GraphSpec
from litetext.runtimes.coreml_runner import DEFAULT_COMPUTE_UNITS, require_coremltools


@contextlib.contextmanager
def _quiet_progress():
    """No coremltools progress bars (tqdm: carriage returns and escape codes in logs) and no transformers notes
    (tracing reads the model's loss_function property, which logs that the config names no loss)."""
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.mil.passes import pass_pipeline
    from transformers.utils import logging as hf_logging

    bars = [(ops, "_tqdm", ops._tqdm), (pass_pipeline, "tqdm", pass_pipeline.tqdm)]
    verbosity = hf_logging.get_verbosity()
    for module, name, _ in bars:
        setattr(module, name, lambda iterable, *args, **kwargs: iterable)
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        for module, name, bar in bars:
            setattr(module, name, bar)


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
        with warnings.catch_warnings(), torch.no_grad(), _quiet_progress():
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
