"""Weight and activation compression (w8, w4, w8a8), computed in PyTorch exactly as coremltools stores it, so
the same numbers serve the package and its simulation."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import torch

from litetext.calibration.int8 import TRUNK_BLOCKS
from litetext.errors import LitetextError
from litetext.export.coreml.describe import _operations
from litetext.export.coreml.options import (ACTIVATION_METHODS, DEFAULT_DEPLOYMENT_TARGET, PERCENTILE, W4_BLOCK_SIZE,
                                            WEIGHT_THRESHOLD, _target)
from litetext.models.graphs import GraphSpec
from litetext.runtimes.coreml_runner import DEFAULT_COMPUTE_UNITS


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


# Image trunks' numbered blocks (litetext.calibration.int8.TRUNK_BLOCKS: TinyViT blocks inside numbered layers,
# EfficientViT op_list, RepViT features). A layer inside one belongs to the innermost.
_BLOCK = re.compile(rf"(?:^|(?<=\.))(?:{'|'.join(TRUNK_BLOCKS)})\.\d+(?=\.|$)")


def layer_group(name: str) -> str:
    """The group a layer's weight belongs to for w4's mixed precision: the path up to its innermost numbered
    trunk block ('trunk.layers.2.blocks.1.attn.qkv' -> 'trunk.layers.2.blocks.1'), else up to a numbered layer
    ('text.layers.3.mlp.fc1' -> 'text.layers.3', 'neck.fpn_layers.0.scale_layers.1' -> 'neck.fpn_layers.0'),
    else the layer itself ('text.embeddings.token_embedding')."""
    blocks = list(_BLOCK.finditer(name))
    if blocks:
        return name[: blocks[-1].end()]
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
