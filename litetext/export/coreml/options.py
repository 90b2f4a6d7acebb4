"""Core ML target options and gates: precisions, deployment targets, batch sizes, tolerances, and the
descriptions every package carries. Checked before any model work (`check_options`)."""

from __future__ import annotations

from litetext.errors import LitetextError
from litetext.models.graphs import Tolerance
from litetext.runtimes.coreml_runner import COMPUTE_UNITS


PRECISIONS = ("fp32", "fp16", "w8", "w4", "w8a8")


# Precisions that use Int8Calibration feeds (litetext.calibration.int8): w8a8 needs them (activation scales);
# w4 uses them, when given, to keep the layer groups 4 bits harm most at 8 bits.
CALIBRATED_PRECISIONS = ("w4", "w8a8")


FILE_SUFFIX = ".mlpackage"


DEPLOYMENT_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")


DEFAULT_DEPLOYMENT_TARGET = "iOS17"


IOS18_LEVEL = ("iOS18", "macOS15")  # per-block and 4-bit weights, several enumerated inputs


BATCH_SIZES = (1, 2, 4, 8)


# Graphs exported at one fixed batch (the smallest asked for), and why: the runner feeds them chunk by chunk.
FIXED_BATCH = {
    "vision_encoder": "its windowed attention reshapes to rank 6, which Core ML accepts only where coremltools can "
                      "rewrite it with static shapes (expand_high_rank_reshape_and_transpose)",
    "heads": "the DETR decoder's box pooling splits the batch into one list item per image (unbind(0)), which "
             "needs a known batch",
}


WEIGHT_THRESHOLD = 2048  # coremltools' default: constants with more elements than this are compressed


# Constant folding stops at this many elements per result, graph by graph. The heads' first decoder layer takes
# its box position bias from learned reference boxes, so with the batch fixed coremltools folds it into a
# [1, 8, 201, 5184] constant (8.3M elements): 15.9 MiB of fp16 that w8 cannot compress, larger than the ops that
# compute it. Its position encodings (1.3M elements, [1, 256, 72, 72]) still fold to fp16 under the limit.
FOLD_LIMITS = {"heads": 4_000_000}


W4_BLOCK_SIZE = 32


SENSITIVITY_BATCHES = 4  # calibration batches (of 16 prompts) that rank w4's layer groups


SENSITIVITY_IMAGES = 1  # image graphs: calibration images that rank them (one 1008 px image is 5184+ feature rows)


SENTINEL = 1e30  # a constant this large is a stand-in for infinity (torch.finfo(float32).min/max)


MASK_MAGNITUDE = 1e4  # what the guard puts in its place


FP16_MAX = 65504.0


ACTIVATION_METHODS = ("minmax", "percentile")


PERCENTILE = 99.99


EXPORTER = {"converter": "coremltools.convert", "frontend": "torch.jit.trace", "format": "mlprogram"}


AUTHOR = "litetext"


# Parity gates of the compressed precisions, by graph (fp32 and fp16 use the graphs' own tolerances). Judged
# by direction, as the ONNX int8 gate is: mean cosine and the worst 1% of tokens / samples.
TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "text_encoder": {
        "w8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.999, min_cosine_worst_1pct=0.995),
        "w4": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.99, min_cosine_worst_1pct=0.97),
        "w8a8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.995, min_cosine_worst_1pct=0.98),
    },
    # w4 takes the text encoder's w4 gate; w8a8 (int8 weights and activations) the graph's own INT8 gate, as the
    # text encoder's w8a8 does.
    "vision_encoder": {
        "w8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.995, min_cosine_worst_1pct=0.99),
        "w4": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.99, min_cosine_worst_1pct=0.97),
        "w8a8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.98, min_cosine_worst_1pct=0.95),
    },
    "heads": {
        "w8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.98, min_cosine_worst_1pct=0.95),
    },
}


DESCRIPTIONS = {
    "input_ids": "CLIP BPE token ids [batch, context] (int32): 49406, the prompt's tokens, 49407, then padding "
                 "(the bundle's tokenizer.json writes them)",
    "attention_mask": "1 for the prompt's tokens (start and end included), 0 for padding [batch, context] (int32)",
    "text_features": "per-token text features [batch, context, 256] (float32); padding positions carry no meaning",
    "pixel_values": "RGB image resized to size x size, (x / 255 - 0.5) / 0.5 [batch, 3, size, size] (float32)",
    "fpn_0": "vision features, 4x level [batch, 256, 4 size/14, 4 size/14] (float32)",
    "fpn_1": "vision features, 2x level [batch, 256, 2 size/14, 2 size/14] (float32)",
    "fpn_2": "vision features, 1x level [batch, 256, size/14, size/14] (float32)",
    "pred_logits": "per-query detection logits [batch, queries]; score = sigmoid(pred_logits) * sigmoid(presence_logits)",
    "pred_boxes": "per-query boxes, xyxy in 0..1 of the image [batch, queries, 4]",
    "pred_masks": "per-query mask logits [batch, queries, 4 size/14, 4 size/14]",
    "presence_logits": "logit that the prompt's concept is present in the image [batch, 1]",
}


GRAPH_DESCRIPTIONS = {
    "text_encoder": "SAM3 / SAM3-LiteText text encoder: token ids -> per-token text features",
    "vision_encoder": "SAM3 vision encoder (ViT + FPN): image -> three feature levels",
    "heads": "SAM3 heads (DETR encoder/decoder, mask decoder, presence): features -> detections",
}


def _target(ct, name: str):
    if name not in DEPLOYMENT_TARGETS:
        raise LitetextError(f"unknown Core ML deployment target {name!r}; choose one of: {', '.join(DEPLOYMENT_TARGETS)}")
    return getattr(ct.target, name)


def check_options(precision: str, deployment_target: str, compute_units: str, batch_sizes) -> tuple[int, ...]:
    """Fail early, before any model work, on options that cannot make a package."""
    if precision not in PRECISIONS:
        raise LitetextError(f"the coreml target exports {', '.join(PRECISIONS)}, not {precision!r}")
    if deployment_target not in DEPLOYMENT_TARGETS:
        raise LitetextError(
            f"unknown Core ML deployment target {deployment_target!r}; choose one of: {', '.join(DEPLOYMENT_TARGETS)}"
        )
    if compute_units not in COMPUTE_UNITS:
        raise LitetextError(f"unknown Core ML compute units {compute_units!r}; choose one of: {', '.join(COMPUTE_UNITS)}")
    if precision == "w4" and deployment_target not in IOS18_LEVEL:
        raise LitetextError(
            f"w4 (4-bit per-block weights) needs Core ML 8: use --deployment-target iOS18 or macOS15, "
            f"not {deployment_target}"
        )
    sizes = tuple(sorted({int(b) for b in batch_sizes}))
    if not sizes or sizes[0] < 1:
        raise LitetextError(f"batch sizes must be positive integers, not {list(batch_sizes)}")
    return sizes
