"""ONNX Runtime on the CPU (and CUDA where the onnxruntime-gpu build and a GPU are present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec
from litetext.runtimes.base import Runner


ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _listed(tensors) -> str:
    return ", ".join(f"{name} {dtype}" for name, dtype in tensors) or "none"


class OnnxRuntimeRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, spec: GraphSpec, precision: str = "fp32",
                 provider: str = "CPUExecutionProvider", threads: int | None = None):
        import onnxruntime as ort

        super().__init__(spec, precision)
        if provider not in ort.get_available_providers():
            raise LitetextError(
                f"ONNX Runtime provider {provider} is not available here (have {ort.get_available_providers()})"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[provider])
        except Exception as e:  # onnxruntime raises its own exception types for broken files
            raise LitetextError(f"ONNX Runtime cannot open {path}: {str(e).splitlines()[0]}") from None
        self.provider = provider
        for kind, have, want in (("inputs", self.session.get_inputs(), spec.inputs),
                                 ("outputs", self.session.get_outputs(), spec.outputs)):
            have = [(t.name, ORT_DTYPES.get(t.type, t.type)) for t in have]
            want = [(t.name, t.dtype) for t in want]
            if have != want:
                raise LitetextError(f"{path} has {kind} {_listed(have)}, the manifest says {_listed(want)}")

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.spec.output_names, feed)

    def close(self) -> None:
        self.session = None
