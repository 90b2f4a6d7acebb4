"""Core ML target: one ML Program package (`<graph>.mlpackage`, a folder) per graph.

    fp32   float32 weights and compute (CPU and GPU only: the Neural Engine computes in fp16)
    fp16   float16 weights and compute, float32 inputs and outputs
    w8     fp16 + weights int8, linear symmetric, one scale per output channel
    w4     fp16 + weights int4, linear symmetric, one scale per block of 32 input channels (iOS18 / macOS15);
           given calibration prompts, the layer groups 4 bits harm most stay at w8's 8 bits (measured in PyTorch)
    w8a8   w8 + the inputs of every Linear / Conv int8 per tensor, scales calibrated in PyTorch on real prompts

Conversion is torch.jit.trace -> coremltools (ML Program). What coremltools 9.0 needs to take these graphs with
torch 2.13 and numpy 2.4 is registered in `convert`, only while a conversion runs (`_converters`):

- `int` / `bool` of a one-element constant: coremltools calls `int(array)`, which numpy 2.4 refuses for
  arrays with ndim > 0 (the vision encoder's position-embedding interpolation stops there);
- `new_ones` (transformers' mask helpers, in the heads), which coremltools has no converter for.

fp16 guard: fp32 "infinity" sentinels (torch.finfo(float32).min, used by additive attention masks, and the open
side of a one-sided clamp) become -inf / inf when cast to fp16, and the text encoder's `(1 - mask) * min` then
gives 0 * -inf = NaN on every valid token. A MIL pass (`litetext::guard_fp16_constants`) runs before
coremltools' fp16 cast and replaces every constant of magnitude >= 1e30: by +-65504 where it bounds a clip (still
no bound in fp16), else by +-1e4 (exp(-1e4) is 0 in fp16 as in fp32, so masked attention is unchanged, and adding
it to a score cannot overflow); finite constants beyond the fp16 range saturate to +-65504. The package's
metadata lists what it replaced.

fp16 weights: coremltools folds a per-channel multiplication after a conv into the conv's weight; S0's layer
scales (1e-5 at initialisation) push the folded weights below fp16's smallest normal number. That fold is left
out (`UNFUSED_PASSES`), and every package lists the fp16 constants that are mostly subnormal (none, so far).

Core ML `predict` needs macOS. On Linux the parity of a package is measured with `simulated_runner`: the same
weight compression applied to the PyTorch graph (bit-identical scales and integers for every weight that
coremltools stores as it is in PyTorch; see `weight_agreement`), the same activation fake-quantization for
w8a8, computed in fp16 on the CPU (convolutions and matrix products through fp32 kernels, rounded to fp16:
`simulate.Fp16ThroughFp32`), compared with fp32 PyTorch on real prompts.

The package splits by job: `options` (precisions, targets, gates, checked first), `convert` (trace, converters,
fp16 guard), `compress` (w8 / w4 / w8a8 in PyTorch, as coremltools stores them), `simulate` (parity without
macOS) and `describe` (metadata, spec and weights read back, the manifest entry). This module hands on the
target surface litetext.export.targets loads.
"""

from litetext.export.coreml.convert import export_graph
from litetext.export.coreml.describe import files_of, graph_manifest, parity_runtime, write_metadata
from litetext.export.coreml.options import (CALIBRATED_PRECISIONS, EXPORTER, FILE_SUFFIX, PRECISIONS, TOLERANCES,
                                            check_options)
from litetext.export.coreml.simulate import simulated_runner
from litetext.runtimes.coreml_runner import can_predict

__all__ = ["CALIBRATED_PRECISIONS", "EXPORTER", "FILE_SUFFIX", "PRECISIONS", "TOLERANCES", "can_predict", "check_options",
           "export_graph", "files_of", "graph_manifest", "parity_runtime", "simulated_runner", "write_metadata"]
