"""Export-only wrappers (they wrap the transformers model, never patch it) and the description of each graph.

A graph is described once, as data (`GraphSpec`): names, dtypes and shapes of its inputs and outputs, which
axes are dynamic, and its parity tolerance. Export, parity checks, runners and benchmarks all read it.

    text_encoder    input_ids [B, L] int64 (+ attention_mask [B, L] when masked) -> text_features [B, L, 256]
    vision_encoder  pixel_values [B, 3, S, S] float32 -> fpn_0 [B, 256, 4S/14, ..], fpn_1 [.., 2S/14], fpn_2 [.., S/14]
    heads           fpn_0, fpn_1, fpn_2, text_features, attention_mask
                      -> pred_logits [B, Q], pred_boxes [B, Q, 4] (xyxy in 0..1), pred_masks [B, Q, 4S/14, 4S/14],
                         presence_logits [B, 1]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from litetext.errors import LitetextError
from litetext.models.loading import LoadedModel
from litetext.models.presets import STUDENT

GRAPH_NAMES = ("text_encoder", "vision_encoder", "heads")
START_ID, END_ID = 49406, 49407


@dataclass(frozen=True)
class TextPadding:
    """How prompts shorter than the context are padded, and whether the text encoder masks the pads.

    "upstream" (default): pad with 0 and no attention mask, as EfficientSAM3 trained and evaluated the
    students: valid tokens attend to the pads. "transformers": pad with 49407 and mask attention, as the
    transformers port runs. The two give different features for every prompt shorter than the context.
    """

    name: str
    pad_id: int
    attention_masked: bool


TEXT_PADDINGS = {
    "upstream": TextPadding("upstream", pad_id=0, attention_masked=False),
    "transformers": TextPadding("transformers", pad_id=END_ID, attention_masked=True),
}


def check_graph_names(graphs) -> None:
    unknown = [g for g in graphs if g not in GRAPH_NAMES]
    if unknown:
        raise LitetextError(f"unknown graphs {unknown}; choose from: {', '.join(GRAPH_NAMES)}")


def get_padding(name: str) -> TextPadding:
    if name not in TEXT_PADDINGS:
        raise LitetextError(f"unknown text padding {name!r}; choose one of: {', '.join(TEXT_PADDINGS)}")
    return TEXT_PADDINGS[name]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int | str, ...]  # str = symbolic (dynamic) axis


@dataclass(frozen=True)
class Tolerance:
    """An output passes when max|err| <= atol + rtol * max|reference| (no bound when atol is None), its worst
    cosine >= min_cosine, its mean cosine >= min_cosine_mean and its worst 1% >= min_cosine_worst_1pct."""

    atol: float | None
    rtol: float
    min_cosine: float
    min_cosine_mean: float = 0.0
    min_cosine_worst_1pct: float = 0.0


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tolerance: dict[str, Tolerance] = field(default_factory=dict)  # by precision

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [asdict(t) for t in self.inputs],
            "outputs": [asdict(t) for t in self.outputs],
        }


# Tolerances are per precision. fp32 is an exact re-expression of the model (errors come from operator
# order only); fp16 is judged by direction (cosine) with a loose absolute bound.
_TEXT_TOLERANCE = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999),
    "fp16": Tolerance(atol=5e-2, rtol=2e-2, min_cosine=0.999),
    # INT8 is judged as a quantized model is: by direction, on average and on the worst 1% of tokens.
    "int8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.995, min_cosine_worst_1pct=0.98),
}
_VISION_TOLERANCE = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-4, min_cosine=0.99999),
    "fp16": Tolerance(atol=1e-1, rtol=3e-2, min_cosine=0.999),
    # INT8 features are judged by direction per image; the heads they feed are judged by instances.
    "int8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.98, min_cosine_worst_1pct=0.95),
}
_HEADS_TOLERANCE = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(atol=2e-1, rtol=5e-2, min_cosine=0.99),
    # INT8 heads are judged by direction per sample and, above all, by the instances an app sees
    # (litetext.calibration.parity.instances_agree).
    "int8": Tolerance(atol=None, rtol=0.0, min_cosine=0.0, min_cosine_mean=0.98, min_cosine_worst_1pct=0.95),
}


# Each graph's gates by precision: which precisions a graph exports (targets add their own, TOLERANCES).
GRAPH_TOLERANCES = {"text_encoder": _TEXT_TOLERANCE, "vision_encoder": _VISION_TOLERANCE, "heads": _HEADS_TOLERANCE}


@dataclass(frozen=True)
class ModelGeometry:
    """Sizes of a loaded model that shape its graphs."""

    image_size: int
    fpn_sizes: tuple[int, int, int]
    fpn_channels: int
    text_width: int  # features after the projection to the DETR width (256)
    num_queries: int


def model_geometry(loaded: LoadedModel) -> ModelGeometry:
    config = loaded.model.config
    vision = config.vision_config
    grid = vision.backbone_config.image_size // vision.backbone_config.patch_size
    sizes = tuple(int(grid * s) for s in vision.scale_factors[:3])
    return ModelGeometry(
        image_size=vision.backbone_config.image_size,
        fpn_sizes=sizes,  # type: ignore[arg-type]
        fpn_channels=vision.fpn_hidden_size,
        text_width=config.detr_encoder_config.hidden_size,
        num_queries=config.detr_decoder_config.num_queries,
    )


def describe_graphs(loaded: LoadedModel, context_length: int, padding: TextPadding) -> dict[str, GraphSpec]:
    g = model_geometry(loaded)
    text_inputs = [TensorSpec("input_ids", "int64", ("batch", context_length))]
    if padding.attention_masked:
        text_inputs.append(TensorSpec("attention_mask", "int64", ("batch", context_length)))
    fpn = tuple(TensorSpec(f"fpn_{i}", "float32", ("batch", g.fpn_channels, s, s)) for i, s in enumerate(g.fpn_sizes))
    text_features = TensorSpec("text_features", "float32", ("batch", context_length, g.text_width))
    return {
        "text_encoder": GraphSpec("text_encoder", tuple(text_inputs), (text_features,), _TEXT_TOLERANCE),
        "vision_encoder": GraphSpec(
            "vision_encoder",
            (TensorSpec("pixel_values", "float32", ("batch", 3, g.image_size, g.image_size)),),
            fpn,
            _VISION_TOLERANCE,
        ),
        "heads": GraphSpec(
            "heads",
            (*fpn, text_features, TensorSpec("attention_mask", "int64", ("batch", context_length))),
            (
                TensorSpec("pred_logits", "float32", ("batch", g.num_queries)),
                TensorSpec("pred_boxes", "float32", ("batch", g.num_queries, 4)),
                TensorSpec("pred_masks", "float32", ("batch", g.num_queries, g.fpn_sizes[0], g.fpn_sizes[0])),
                TensorSpec("presence_logits", "float32", ("batch", 1)),
            ),
            _HEADS_TOLERANCE,
        ),
    }


class TextEncoderGraph(nn.Module):
    """Token ids -> per-token text features [B, L, 256], the position table baked for one context length.

    `kept_ids` (ascending old ids, litetext.vocabulary.PrunedVocabulary) prunes the token table to those rows:
    the graph then takes the NEW ids (positions in `kept_ids`) and holds only those rows."""

    def __init__(self, loaded: LoadedModel, context_length: int, padding: TextPadding, kept_ids=None):
        super().__init__()
        self.family = loaded.family
        self.text = loaded.model.text_encoder
        self.projection = loaded.model.text_projection
        self.attention_masked = padding.attention_masked
        self.token_embedding = self.text.embeddings.token_embedding if self.family == STUDENT else None
        if kept_ids is not None:
            if self.family != STUDENT:
                raise LitetextError("pruning the token table is implemented for the MobileCLIP students only, "
                                    "not the teacher's CLIP text encoder")
            rows = self.token_embedding.weight.detach()[torch.as_tensor(kept_ids, dtype=torch.long)].clone()
            self.token_embedding = nn.Embedding.from_pretrained(rows, freeze=True)
        if self.family == STUDENT:
            with torch.no_grad():
                # The student's table is interpolated (bilinear) when its length differs from the context;
                # computing it here once makes it a constant of the graph.
                table = self.text.embeddings.position_embedding(context_length)  # [1, L, D]
            self.register_buffer("position_table", table.detach().clone(), persistent=False)
        else:
            limit = self.text.config.max_position_embeddings
            if context_length > limit:
                raise LitetextError(f"the teacher's text encoder holds {limit} positions, not {context_length}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask if self.attention_masked else None
        if self.family != STUDENT:
            # CLIP text (causal): valid tokens never see the pads, so padding changes only pad positions.
            hidden = self.text.text_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            return self.projection(hidden)
        return self.from_embeddings(self.token_embedding(input_ids), attention_mask)

    def from_embeddings(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The student from looked-up token embeddings [B, L, D] on: targets whose app does the lookup (litert)."""
        mask = attention_mask if self.attention_masked else None
        hidden = token_embeddings + self.position_table  # [B, L, D]
        additive = None
        if mask is not None:
            # [B, 1, 1, L]: 0 where a token is valid, the float32 minimum where it is a pad (as transformers).
            additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for layer in self.text.layers:
            hidden = layer(hidden, attention_mask=additive)
        return self.projection(self.text.final_layer_norm(hidden))  # [B, L, 256]


class VisionEncoderGraph(nn.Module):
    """pixel_values [B, 3, S, S] -> the three FPN levels the heads use."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.vision = loaded.model.vision_encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.vision(pixel_values).fpn_hidden_states
        return levels[0], levels[1], levels[2]  # the 4th (0.5x) level is unused by SAM3's heads


class HeadsGraph(nn.Module):
    """FPN levels + text features -> detections. Runs the model's own forward with precomputed inputs; the
    sine position encodings depend only on the feature-map size, so they are constants of the graph.
    Under upstream heads semantics (litetext.models.heads_semantics) the empty-prompt geometry token is
    appended to the text tokens first."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        from litetext.models.heads_semantics import EmptyPromptGeometryToken, heads_semantics_of

        self.model = loaded.model
        self.semantics = heads_semantics_of(loaded)
        self.geometry_token = None
        if self.semantics.geometry_token:  # upstream: appended inside the graph, so every target has it
            self.geometry_token = EmptyPromptGeometryToken(self.model.geometry_encoder)
        g = model_geometry(loaded)
        encode = self.model.vision_encoder.neck.position_encoding
        for i, size in enumerate(g.fpn_sizes):
            pos = encode(torch.Size([1, g.fpn_channels, size, size]), "cpu", torch.float32)
            self.register_buffer(f"position_{i}", pos.detach().clone(), persistent=False)

    def forward(self, fpn_0, fpn_1, fpn_2, text_features, attention_mask):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        batch = fpn_0.shape[0]
        positions = [getattr(self, f"position_{i}").expand(batch, -1, -1, -1) for i in range(3)]
        vision = _vision_output_class(self.model)(
            # The model drops the last level of each tuple (the 0.5x level); pass a placeholder there.
            fpn_hidden_states=(fpn_0, fpn_1, fpn_2, fpn_2),
            fpn_position_encoding=(*positions, positions[2]),
        )
        if self.geometry_token is not None:
            from litetext.models.heads_semantics import append_geometry_token

            text_features, attention_mask = append_geometry_token(self.geometry_token, text_features, attention_mask,
                                                                  fpn_2, positions[2])
        out = self.model(
            vision_embeds=vision,
            text_embeds=BaseModelOutputWithPooling(pooler_output=text_features),
            attention_mask=attention_mask,
        )
        return out.pred_logits, out.pred_boxes, out.pred_masks, out.presence_logits


def _vision_output_class(model):
    if model.config.model_type == "sam3_lite_text":
        from transformers.models.sam3_lite_text.modeling_sam3_lite_text import Sam3LiteTextVisionEncoderOutput

        return Sam3LiteTextVisionEncoderOutput
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    return Sam3VisionEncoderOutput


def build_graph(name: str, loaded: LoadedModel, context_length: int, padding: TextPadding,
                kept_ids=None) -> nn.Module:
    """`kept_ids` prunes the text encoder's token table (TextEncoderGraph)."""
    from litetext.models.upstream_files import check_graph_available

    check_graph_available(loaded, name)
    if name == "text_encoder":
        return TextEncoderGraph(loaded, context_length, padding, kept_ids).eval()
    if name == "vision_encoder":
        return VisionEncoderGraph(loaded).eval()
    if name == "heads":
        return HeadsGraph(loaded).eval()
    raise LitetextError(f"unknown graph {name!r}; choose from: {', '.join(GRAPH_NAMES)}")
