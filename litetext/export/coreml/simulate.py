"""Parity without macOS: the package's compression simulated on the PyTorch graph, and the checks that the
simulation matches the package bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litetext.calibration.search import keep_most_sensitive
from litetext.errors import LitetextError
from litetext.export.coreml.compress import (_quantizable, _run_with_hooks, _weight_modules, attach_activation_quantizers,
                                             calibrate_activations, compress_weights_, layer_group)
from litetext.export.coreml.describe import package_weights
from litetext.export.coreml.options import (FP16_MAX, PRECISIONS, SENSITIVITY_BATCHES, SENSITIVITY_IMAGES,
                                            WEIGHT_THRESHOLD)
from litetext.models.graphs import GraphSpec
from litetext.runtimes.base import Runner


class Fp16ThroughFp32(torch.overrides.TorchFunctionMode):
    """Convolutions and matrix products of fp16 tensors run as PyTorch's fp16 CPU kernels compute them (fp16
    operands, fp32 accumulation, one rounding of the result to fp16), but through its fp32 kernels: on CPUs
    without AVX512-FP16 the fp16 kernels are 6-40x slower (full-size image graphs take minutes per image).
    Everything else runs in fp16 as it is."""

    OPS = {torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv_transpose1d,
           torch.nn.functional.conv_transpose2d, torch.nn.functional.linear, torch.matmul, torch.Tensor.matmul,
           torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm, torch.mm, torch.Tensor.mm,
           torch.nn.functional.scaled_dot_product_attention}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.OPS or not any(isinstance(a, torch.Tensor) and a.dtype == torch.float16 for a in args):
            return func(*args, **kwargs)

        def up(value):
            return value.float() if isinstance(value, torch.Tensor) and value.dtype == torch.float16 else value

        return func(*map(up, args), **{k: up(v) for k, v in kwargs.items()}).half()


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
        with Fp16ThroughFp32():
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


def search_w4(module: torch.nn.Module, spec: GraphSpec, calibration) -> dict[str, Any]:
    """w4's mixed precision, measured on the calibration feeds only: if all-4-bit misses the calibration target
    (calibration.target_cosine_mean / target_cosine_worst_1pct), the layer groups whose 4 bits cost most stay
    at 8 bits per channel: the shortest prefix of the ranking (most sensitive first) that meets it
    (litetext.calibration.search).
    Sensitivity of a group: the error with that group alone in 4 bits (the rest in 8), on the first
    SENSITIVITY_BATCHES calibration batches (SENSITIVITY_IMAGES images for image graphs), in fp32 compute: it
    ranks weight errors, and is several times faster than fp16 emulation on a CPU."""
    reference = _CalibrationReference(module, spec, calibration.feeds)
    count = SENSITIVITY_BATCHES if spec.name == "text_encoder" else SENSITIVITY_IMAGES
    ranking = _CalibrationReference(module, spec, calibration.feeds[:count])
    groups = sorted({layer_group(n) for n, m, _, _ in _weight_modules(module) if m.weight.numel() > WEIGHT_THRESHOLD})

    def figures(keep, on=reference):
        runner = SimulatedCoreMLRunner(module, spec, "w4", None, keep_8bit=keep, compute=torch.float32)
        return on.parity(runner)

    def error_alone(group: str) -> float:  # that group alone in 4 bits, on the ranking feeds
        return 1.0 - figures([g for g in groups if g != group], ranking)["cosine_mean"]

    found = keep_most_sensitive(groups, figures, error_alone, calibration.met_by)
    kept, current, sensitivity = found.kept, found.figures, found.sensitivity
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
