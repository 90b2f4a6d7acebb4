"""ONNX target: TorchScript-based export, checker, simplification, optional fp16.

The TorchScript exporter (dynamo=False) is used for every graph: the dynamo exporter fails on SAM3's heads
(see toolchains.md), and one exporter for all graphs keeps the artifacts alike.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec
from litetext.onnx_graph import files_of, save, topologically_sorted

OPSET = 17  # ONNX Runtime, TensorRT 10 and 11 all parse it; LayerNormalization is native from 17
PRECISIONS = ("fp32", "fp16", "int8")
FILE_SUFFIX = ".onnx"


def export_graph(module: torch.nn.Module, spec: GraphSpec, example: dict, path: Path, precision: str,
                 calibration=None) -> Path:
    """Trace `module` on `example` (numpy feed) and write an ONNX file at `path`. Returns the path.
    INT8 needs `calibration` (litetext.calibration.int8.Int8Calibration): fp32 is exported, then quantized."""
    import onnx

    if precision == "int8":
        from litetext.calibration.int8 import quantize_int8

        if calibration is None:
            raise LitetextError("int8 export needs calibration prompts")
        fp32 = path.with_name(path.stem + ".fp32.onnx")
        export_graph(module, spec, example, fp32, "fp32")
        quantize_int8(fp32, path, calibration)
        for f in files_of(fp32):
            f.unlink()
        onnx.checker.check_model(str(path), full_check=True)
        return path

    if precision not in PRECISIONS:
        raise LitetextError(f"the onnx target exports {', '.join(PRECISIONS)}, not {precision!r}")
    args = tuple(torch.from_numpy(example[name]) for name in spec.input_names)
    dynamic = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in (*spec.inputs, *spec.outputs)}
    raw = path.with_suffix(".raw.onnx")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter warns about its own deprecation and about traced Python values.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(raw), input_names=spec.input_names, output_names=spec.output_names,
            dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    model = onnx.load(str(raw))
    raw.unlink()
    model = simplify(model)
    if precision == "fp16":
        model = to_fp16(model)
    save(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def simplify(model):
    """Constant folding and dead-node removal with onnxslim (pure Python, no size limit)."""
    import onnxslim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxslim.slim(model)


def to_fp16(model):
    """fp16 weights and compute, fp32 inputs and outputs so apps feed the same arrays at every precision."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return topologically_sorted(convert_float_to_float16(model, keep_io_types=True))


