"""The text encoder alone: its modules and weights without SAM3's vision encoder and heads.

Text-only work (a text_encoder export, prompt analysis, a text-encoder benchmark) needs 161 MiB of S0 weights,
not the 1.7 GiB ViT-L beside them. `TextOnlyModel` holds what `TextEncoderGraph` reads from a full model
(`config`, `text_encoder`, `text_projection`, under the same names), so a `LoadedModel` around it works
everywhere the text encoder is used.

Random weights come from their own seeded stream (`random_text_part`), and a full model built with random
weights takes this same text part, so a text-only load and a full load of one seed give the same text features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from litetext.models.presets import STUDENT

TEXT_PREFIXES = ("text_encoder.", "text_projection.")  # a full model's keys of the text part
TEXT_STREAM_OFFSET = 7919  # the text part's random stream: seed + this (any fixed number)
UPSTREAM_TEXT_PREFIX = "detector.backbone.language_backbone."  # upstream keys of the text encoder and projection


def text_encoder_class(family: str):
    if family == STUDENT:
        from transformers.models.sam3_lite_text.modeling_sam3_lite_text import Sam3LiteTextTextModel

        return Sam3LiteTextTextModel
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection


class TextOnlyModel(nn.Module):
    """The text encoder and its projection to the DETR width, with the full model's config (graph geometry,
    manifests) and its parameter names (`text_encoder.*`, `text_projection.*`)."""

    def __init__(self, config, family: str):
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder_class(family)(config.text_config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.detr_encoder_config.hidden_size)


def random_text_part(config, family: str, seed: int) -> TextOnlyModel:
    """Seeded random text weights, independent of anything else built with the same seed."""
    torch.manual_seed(seed + TEXT_STREAM_OFFSET)
    part = TextOnlyModel(config, family)
    # The projection as transformers initialises a full model's (normal, std initializer_range; zero bias).
    nn.init.normal_(part.text_projection.weight, std=getattr(config, "initializer_range", 0.02))
    nn.init.zeros_(part.text_projection.bias)
    return part.eval()


def use_text_part(model: nn.Module, part: TextOnlyModel) -> None:
    """Put `part`'s text encoder and projection into a full model (replacing its own)."""
    model.text_encoder = part.text_encoder
    model.text_projection = part.text_projection


def read_text_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The text part's tensors of a transformers folder's safetensors files (nothing else is read)."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.startswith(TEXT_PREFIXES):
                    state[key] = f.get_tensor(key)
    return state


def upstream_text_keys(state: dict[str, Any]) -> dict[str, Any]:
    """An upstream checkpoint's text encoder and projection entries (its vision and heads left out)."""
    return {k: v for k, v in state.items() if isinstance(k, str) and k.startswith(UPSTREAM_TEXT_PREFIX)}


def key_problems(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing, unexpected, mismatched) keys of `state` against `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return missing, unexpected, mismatched
