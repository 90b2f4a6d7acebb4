"""TensorRT engines (10.x and 11.x, the name-based I/O API of execute_async_v3), with device buffers from torch's
CUDA allocator. Needs `tensorrt` (NVIDIA's index, or JetPack's python3-libnvinfer) and a CUDA build of torch.

    runner = TensorRTRunner("bundle/text_encoder.trt10.plan", bundle.spec("text_encoder"), "int8")
    runner = TensorRTRunner.from_onnx("bundle/text_encoder.onnx", spec, "int8")   # builds the engine in memory
    features = runner.infer({"input_ids": ids})["text_features"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec
from litetext.runtimes.base import Runner
from litetext.runtimes.onnxruntime_runner import OnnxRuntimeRunner


def _torch_dtype(trt, torch, dtype):
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    for name, torch_type in (("INT64", torch.int64), ("BF16", torch.bfloat16), ("UINT8", torch.uint8)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = torch_type
    if dtype not in table:
        raise LitetextError(f"TensorRT I/O type {dtype} is not handled by this runner")
    return table[dtype]


class TensorRTRunner(Runner):
    runtime = "tensorrt"

    def __init__(self, engine: str | Path | bytes, spec: GraphSpec, precision: str = "fp16", device: int = 0):
        from litetext.runtimes.tensorrt_engine import import_tensorrt

        super().__init__(spec, precision)
        trt = import_tensorrt()
        try:
            import torch
        except ImportError:
            raise LitetextError("TensorRTRunner needs torch (a CUDA build) for device buffers") from None
        if not torch.cuda.is_available():
            raise LitetextError("TensorRTRunner needs a CUDA device (torch.cuda.is_available() is False)")
        self.trt, self.torch = trt, torch
        self.device = torch.device("cuda", device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime_ = trt.Runtime(self.logger)
        data = engine if isinstance(engine, (bytes, bytearray)) else Path(engine).read_bytes()
        self.engine = self.runtime_.deserialize_cuda_engine(bytes(data))
        if self.engine is None:
            raise LitetextError(f"TensorRT {trt.__version__} cannot load the engine {engine if not isinstance(engine, (bytes, bytearray)) else '(in memory)'}: "
                                "engines load only with the TensorRT version and GPU they were built with")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sorted(self.inputs) != sorted(spec.input_names) or sorted(self.outputs) != sorted(spec.output_names):
            raise LitetextError(f"engine I/O {self.inputs} -> {self.outputs} differs from the manifest's "
                                f"{spec.input_names} -> {spec.output_names}")
        self.stream = torch.cuda.Stream(device=self.device)

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, spec: GraphSpec, precision: str = "fp16", **build_options):
        """Build an engine from a bundle graph now (minutes for large graphs), then run it."""
        import tempfile

        from litetext.runtimes.tensorrt_engine import build_engine

        with tempfile.TemporaryDirectory() as scratch:
            plan = Path(scratch) / "engine.plan"
            build_engine(Path(onnx_path), spec, plan, **build_options)
            return cls(plan.read_bytes(), spec, precision)

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch, trt = self.torch, self.trt
        keep = []
        with torch.cuda.device(self.device):
            for name in self.inputs:
                want = _torch_dtype(trt, torch, self.engine.get_tensor_dtype(name))
                tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device, want).contiguous()
                keep.append(tensor)
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise LitetextError(f"{self.spec.name}: input {name} shape {tuple(tensor.shape)} is outside the "
                                        "engine's optimization profile")
                self.context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = _torch_dtype(trt, torch, self.engine.get_tensor_dtype(name))
                outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise LitetextError(f"{self.spec.name}: TensorRT execution failed")
            self.stream.synchronize()
        out = []
        for name in self.spec.output_names:
            value = outputs[name].cpu()
            out.append(value.float().numpy() if value.is_floating_point() else value.numpy())
        return out

    def close(self) -> None:
        self.context = None
        self.engine = None


def open_tensorrt_graph(path: Path, spec: GraphSpec, precision: str):
    """A TensorRT engine runner where TensorRT and a GPU are present (the engine `build-engine` wrote beside the
    graph, or one built now), else ONNX Runtime on the CPU running the same graph."""
    path = Path(path)
    from litetext.runtimes.tensorrt_engine import tensorrt_usable

    if tensorrt_usable():
        import tensorrt as trt

        plan = path.with_name(f"{path.stem}.trt{trt.__version__.split('.')[0]}.plan")
        if plan.is_file():
            return TensorRTRunner(plan, spec, precision)
        return TensorRTRunner.from_onnx(path, spec, precision)
    return OnnxRuntimeStandIn(path, spec, precision)


class OnnxRuntimeStandIn(OnnxRuntimeRunner):
    """ONNX Runtime (CPU) running a TensorRT-target graph as written, where TensorRT is absent."""

    runtime = "onnxruntime-cpu (TensorRT absent)"
