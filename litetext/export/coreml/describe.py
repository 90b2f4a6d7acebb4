"""What a package says about itself: metadata written into it, its spec, operations and weights read back,
and what the bundle manifest records."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from litetext.errors import LitetextError
from litetext.export.coreml.options import AUTHOR, DESCRIPTIONS, FIXED_BATCH, GRAPH_DESCRIPTIONS
from litetext.models.graphs import GraphSpec
from litetext.runtimes.coreml_runner import DEFAULT_COMPUTE_UNITS, can_predict, require_coremltools


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

    declared = {t["name"]: t["dtype"].lower() for t in info["inputs"]}
    # The package's own input types (Core ML takes int32 ids and masks); litetext's runners take the graph's
    # types (runner_dtype) and cast.
    inputs = [{"name": t.name, "dtype": declared.get(t.name, t.dtype), "shape": list(t.shape),
               **({"runner_dtype": t.dtype} if declared.get(t.name, t.dtype) != t.dtype else {})}
              for t in spec.inputs]
    return {"inputs": inputs, "coreml": {
        "format": "mlprogram", "specification_version": info["specification_version"],
        "deployment_target": entry("deployment_target"), "compute_units": entry("compute_units"),
        "batch_sizes": entry("batch_sizes"), "batch_fixed_because": entry("batch_fixed_because"),
        "weights_compressed": entry("weights_compressed"), "layers_kept_8bit": entry("layers_kept_8bit"),
        "compression_ops": {k: v for k, v in info["ops"].items() if k.startswith("constexpr") or k in ("quantize", "dequantize")},
        "fp16_guard": entry("fp16_guard"), "fp16_subnormal_constants": entry("fp16_subnormal_constants"),
        "parity_runtime": parity_runtime(entry("compute_units")),
        "files": len(files_of(path)),
    }}


def _operations(program):
    """Every MIL operation of every function, the ops of nested blocks before the op that holds them."""

    def walk(block):
        for op in block.operations:
            for inner in op.blocks:
                yield from walk(inner)
            yield op

    for function in program.functions.values():
        yield from walk(function)
