"""TensorRT target: ONNX graphs made for TensorRT's ONNX parser (10.x and 11.x), engines built on the device.

The artifact is ONNX, not an engine: engines are specific to a GPU and a TensorRT version, so they are built where
they run (`litetext build-engine`, or the trtexec recipe beside each graph). What the graph carries:

- fp16 in the graph (weights and compute; fp32 inputs and outputs), opset 19: TensorRT 11 networks are strongly
  typed, so the precision must be in the graph; TensorRT 10 builds the same graph with `--stronglyTyped`.
- INT8 as explicit Q/DQ (TensorRT 11 removed implicit calibration): symmetric int8 (zero point 0, never uint8),
  activations per tensor calibrated on real prompts (ONNX Runtime's calibrators), weights per output channel (axis
  0 of Conv weights, the last axis of MatMul weights), Q/DQ only on Conv/Gemm/MatMul inputs, biases and the token
  table in fp16 (no int32 DequantizeLinear; TensorRT runs Gather in floating point), fp16 scales (opset 19).
- the batch axis dynamic; each recipe gives TensorRT an optimization profile (min/opt/max batch).

Beside each graph (`<graph>.onnx`) the bundle holds:

    <graph>.trt10.sh         trtexec recipe for TensorRT 10.x (JetPack 6: 10.3), explicit INT8, and the implicit
                             INT8 + DLA alternative for Orin
    <graph>.trt11.sh         trtexec recipe for TensorRT 11.x
    <graph>.calib.cache      INT8 only: TensorRT's calibration cache written from the calibrated ranges, for
                             implicit INT8 on TensorRT <= 10 (`strip-qdq` makes the graph it applies to)
    <graph>.tensorrt.json    what was done: precision, quantization, profile, recipes, static check

Without TensorRT (as on the machine that exports), the runner (litetext.runtimes.tensorrt_runner) runs the graph in ONNX Runtime on the CPU, Q/DQ
included, and says so; with TensorRT and a GPU it builds and runs an engine.

    python -m litetext.export.tensorrt strip-qdq text_encoder.onnx text_encoder.implicit.onnx

The package splits by job: `options` (constants), `convert` (export_graph: fp16 and Q/DQ graphs, the manifest
entry), `qdq` (explicit INT8 and the calibration cache), `recipes` (trtexec scripts, DLA) and `check` (the static
check of a graph against TensorRT's ONNX parser). Building and running engines is litetext.runtimes'.
"""

from litetext.export.tensorrt.convert import export_graph, graph_manifest, parity_runtime
from litetext.export.tensorrt.options import FILE_SUFFIX, OPSET, PRECISIONS
from litetext.onnx_graph import files_of

EXPORTER = {"opset": OPSET, "torch_onnx_dynamo": False}

__all__ = ["EXPORTER", "FILE_SUFFIX", "OPSET", "PRECISIONS", "export_graph", "files_of", "graph_manifest",
           "parity_runtime"]
