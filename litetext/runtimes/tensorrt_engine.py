"""TensorRT on the device: importing it, building engines from a bundle's ONNX graphs (explicit Q/DQ, or
implicit INT8 from the calibration cache), and the graph facts an engine build needs (shape profiles, the
Q/DQ-free graph a cache applies to). The TensorRT target writes what these read; runners build with them."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.files import write_bytes_atomic
from litetext.models.graphs import GraphSpec


BATCH_PROFILE = (1, 8, 32)  # min, opt, max batch in the recipes' optimization profile


CACHE_SUFFIX = ".calib.cache"


NOT_INSTALLED = ("tensorrt is not installed (its libraries come from NVIDIA, not PyPI): on a Jetson use JetPack's "
                 "python3-libnvinfer; elsewhere pip install tensorrt from NVIDIA's index (--extra-index-url "
                 "https://pypi.nvidia.com)")


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
    drop_unused_initializers(graph)
    return model


def drop_unused_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


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
        write_bytes_atomic(out, bytes(plan))
        if timing_cache:
            write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
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
