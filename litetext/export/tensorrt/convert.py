"""fp16 and INT8 graphs for TensorRT's ONNX parser, and the files that describe them."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from litetext.errors import LitetextError
from litetext.export.tensorrt.options import CACHE_TENSORRT_VERSION, OPSET, PRECISIONS, SIDECAR_SUFFIX, TENSORRT_VERSIONS
from litetext.export.tensorrt.qdq import quantize_for_tensorrt, to_tensorrt_fp16
from litetext.export.tensorrt.recipes import write_extras
from litetext.models.graphs import GraphSpec
from litetext.onnx_graph import save
from litetext.runtimes.tensorrt_engine import BATCH_PROFILE, CACHE_SUFFIX, tensorrt_usable


def export_graph(module, spec: GraphSpec, example: dict, path: Path, precision: str, calibration=None, *,
                 tensorrt_versions=TENSORRT_VERSIONS, cache_version: str = CACHE_TENSORRT_VERSION,
                 batch_profile=BATCH_PROFILE) -> Path:
    """Trace `module`, write the TensorRT-ready ONNX graph at `path` and its recipes and sidecar beside it.
    INT8 needs `calibration` (litetext.calibration.int8.Int8Calibration: feeds from real prompts and a method)."""
    import onnx

    from litetext.export import onnx as onnx_target
    from litetext.export.tensorrt.check import check_model, errors_of

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
        save(model, path)
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
