"""The student as it is trained, and the full SAM3-LiteText model it becomes.

Training runs :class:`StudentText`: token embedding + the position table for the context + the layers + final
norm + projection to the heads' width. It computes exactly what the export graph
(:class:`litetext.models.graphs.TextEncoderGraph`, "upstream" padding: pad 0, no attention mask) computes:
the same modules in the same order, and the same position-table rule,
``text_encoder.embeddings.position_embedding(context_length)`` (the model's own bilinear interpolation when
the table has another length; with a table of exactly the context's length, the table itself). The only
difference is that training keeps the table differentiable while the export bakes it as a constant.

The model runs in eval mode while it trains: the RepMixer blocks' BatchNorm keeps its running statistics
(it is a fixed affine map whose scale and shift are trained) instead of normalising with the statistics of
padded batches, so the function trained is the function exported.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from litetext.errors import LitetextError
from litetext.models.presets import STUDENT, TEACHER, get_preset

# Sub-configs the output model takes from the teacher (its vision encoder and heads, unchanged).
HEAD_CONFIGS = ("vision_config", "geometry_encoder_config", "detr_encoder_config", "detr_decoder_config",
                "mask_decoder_config")
TEXT_PREFIXES = ("text_encoder.", "text_projection.")


class StudentText(nn.Module):
    """input_ids [B, L] (pad 0) -> text_features [B, L, D]: the student text encoder and its projection."""

    def __init__(self, text_encoder: nn.Module, projection: nn.Linear):
        super().__init__()
        self.text_encoder = text_encoder
        self.text_projection = projection
        # The text model's own CLIP-style projection makes its pooled output, which SAM3 does not use: it is
        # kept as it is (and out of the optimizer and DDP's gradient reduction).
        if getattr(text_encoder, "projection", None) is not None:
            text_encoder.projection.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        text = self.text_encoder
        table = text.embeddings.position_embedding(input_ids.shape[1])  # [1, L, D], the export's rule
        hidden = text.embeddings.token_embedding(input_ids) + table
        for layer in text.layers:
            hidden = layer(hidden, attention_mask=None)
        return self.text_projection(text.final_layer_norm(hidden))


def student_text_config(preset: str, context_length: int, overrides: dict[str, Any] | None = None) -> dict:
    """The text config of a student preset at a context length (its position table has one row per position)."""
    spec = get_preset(preset)
    if spec.family != STUDENT:
        raise LitetextError(f"--student must be a SAM3-LiteText preset (litetext-s0, -s1, -l), not {preset!r}")
    config = {**spec.text_config, **(overrides or {})}
    config.setdefault("max_position_embeddings", context_length)
    return config


def new_student(text_config: dict, width: int, seed: int) -> StudentText:
    """A randomly initialised student (seeded), projecting to the heads' width."""
    from transformers import Sam3LiteTextTextConfig
    from transformers.models.sam3_lite_text.modeling_sam3_lite_text import Sam3LiteTextTextModel

    torch.manual_seed(seed)
    text = Sam3LiteTextTextModel(Sam3LiteTextTextConfig(**text_config))
    projection = nn.Linear(text.config.hidden_size, width)
    return StudentText(text, projection).eval()


def student_from_model(loaded, width: int) -> StudentText:
    """A student initialised from a loaded SAM3-LiteText model (its text encoder and projection, copied)."""
    if loaded.family != STUDENT:
        raise LitetextError("--student checkpoint must be a SAM3-LiteText model, not a SAM3 teacher")
    projection = loaded.model.text_projection
    if projection.out_features != width:
        raise LitetextError(f"the student checkpoint projects text to {projection.out_features} channels but the "
                            f"teacher's heads take {width}")
    return StudentText(copy.deepcopy(loaded.model.text_encoder), copy.deepcopy(projection)).eval()


def heads_width(teacher) -> int:
    return int(teacher.model.config.detr_encoder_config.hidden_size)


def assemble(student: StudentText, teacher) -> nn.Module:
    """A full ``Sam3LiteTextModel``: the student's text encoder and projection, and the teacher's vision encoder
    and heads (copied unchanged: SAM3-LiteText shares SAM3's vision encoder and heads)."""
    from transformers import Sam3LiteTextConfig, Sam3LiteTextModel

    source = teacher.model.config
    heads = {}
    for name in HEAD_CONFIGS:
        sub = getattr(source, name).to_dict()
        if name != "vision_config":
            sub.pop("model_type", None)  # the teacher's sub-config types have SAM3 names; the fields are the same
        heads[name] = sub
    config = Sam3LiteTextConfig(text_config=student.text_encoder.config.to_dict(), **heads)
    model = Sam3LiteTextModel(config).eval()
    state = {k: v for k, v in teacher.model.state_dict().items() if not k.startswith(TEXT_PREFIXES)}
    state.update({k: v for k, v in student.state_dict().items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LitetextError(f"cannot assemble the student model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def teacher_family_label(teacher) -> str:
    return "SAM3 (CLIP text encoder)" if teacher.family == TEACHER else "SAM3-LiteText"
