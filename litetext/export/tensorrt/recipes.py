"""trtexec recipes per TensorRT version (and DLA on Orin), written beside each graph."""

from __future__ import annotations

from pathlib import Path

from litetext.export.tensorrt.qdq import ranges_amax, write_calibration_cache
from litetext.models.graphs import GraphSpec
from litetext.runtimes.tensorrt_engine import BATCH_PROFILE, CACHE_SUFFIX, shape_profile, strip_qdq


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
