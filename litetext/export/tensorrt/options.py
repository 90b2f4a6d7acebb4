"""TensorRT target constants: opset, precisions, versions the recipes serve, file names beside each graph."""

from __future__ import annotations


OPSET = 19  # fp16 QuantizeLinear/DequantizeLinear need 19; TensorRT 10.0+ reads 9..20, 11.x reads 9..24+


PRECISIONS = ("fp16", "int8")


FILE_SUFFIX = ".onnx"


TENSORRT_VERSIONS = (10, 11)


CACHE_TENSORRT_VERSION = "10.3.0"  # JetPack 6.1 and 6.2; build-engine rewrites the header for the installed one


QUANTIZED_OPS = ("MatMul", "Conv", "Gemm")


SIDECAR_SUFFIX = ".tensorrt.json"
