"""What the heads do with a text-only prompt: upstream's way or the transformers port's way.

The two differ in two places, both before the DETR encoder:

    upstream       EfficientSAM3 / SAM3 (SimonZeng7108/efficientsam3, facebookresearch/sam3) always runs its
                   geometry encoder, on the EMPTY prompt when only text is given, and appends the one token it
                   makes (its CLS token after cross-attending to the 72x72 FPN level) to the prompt tokens. A text
                   token is valid where its id is not 0. The released .pt weights were trained and evaluated so.
    transformers   Sam3Model / Sam3LiteTextModel run the geometry encoder only when boxes are given; a text
                   token is valid from the start token to the end token (the tokenizer's attention mask).

The heads graph keeps one interface for both: fpn_0..2, text_features [B, L, W], attention_mask [B, L]. Under
"upstream" the graph computes the geometry token itself and the attention_mask it expects is 1 where the token
id is not 0 (`heads_attention_mask`); the manifest says which. With no boxes there is nothing to pool, so the
empty-prompt path needs no ROI align (and no torchvision).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from litetext.errors import LitetextError


@dataclass(frozen=True)
class HeadsSemantics:
    name: str
    geometry_token: bool  # append the empty-prompt geometry encoder token to the prompt tokens
    text_valid: str  # which text tokens the heads attend to (the meaning of the heads' attention_mask input)


HEADS_SEMANTICS = {
    "upstream": HeadsSemantics("upstream", geometry_token=True,
                               text_valid="id != 0 (among the prompt's tokens, start and end included)"),
    "transformers": HeadsSemantics("transformers", geometry_token=False,
                                   text_valid="start token to end token (the tokenizer's attention mask)"),
}


def get_heads_semantics(name: str) -> HeadsSemantics:
    if name not in HEADS_SEMANTICS:
        raise LitetextError(f"unknown heads semantics {name!r}; choose one of: {', '.join(HEADS_SEMANTICS)}")
    return HEADS_SEMANTICS[name]


# config.json key of a transformers folder trained by litetext (`litetext train-fixture`): the heads semantics it
# was trained with, which its exports must keep
TRAINED_WITH_KEY = "litetext_heads_semantics"


def default_heads_semantics(weights: dict[str, Any]) -> str:
    """By the checkpoint's origin: an upstream .pt was trained with upstream's heads; a transformers folder is
    meant to run as transformers runs it, unless its config says what it was trained with (TRAINED_WITH_KEY).
    Random weights stand in for the released (upstream) checkpoints in every benchmark and test, so they get
    the graph those checkpoints need, geometry token included."""
    if weights.get("trained_heads_semantics"):
        return get_heads_semantics(weights["trained_heads_semantics"]).name
    if weights.get("kind") == "checkpoint" and weights.get("format") == "transformers":
        return "transformers"
    return "upstream"


def heads_semantics_of(loaded) -> HeadsSemantics:
    """The loaded model's choice: its `heads_semantics` when set (an override), else by origin."""
    return get_heads_semantics(getattr(loaded, "heads_semantics", None) or default_heads_semantics(loaded.weights))


def semantics_of_manifest(manifest: dict[str, Any]) -> HeadsSemantics:
    """A bundle's heads semantics; bundles written before the choice existed ran the transformers way."""
    return get_heads_semantics(manifest.get("heads_semantics", {}).get("name", "transformers"))


def heads_attention_mask(input_ids: np.ndarray, attention_mask: np.ndarray, semantics: HeadsSemantics) -> np.ndarray:
    """The heads' attention_mask (int64 [B, L]) for token ids and the tokenizer's mask. Upstream's rule is
    `id != 0`; it is applied within the tokenizer's mask so that pads other than 0 (transformers text padding)
    stay invalid. With upstream padding (pad 0) the result is exactly `input_ids != 0`."""
    mask = np.asarray(attention_mask).astype(np.int64)
    if semantics.geometry_token:  # the upstream rule
        mask = mask * (np.asarray(input_ids) != 0)
    return mask


def semantics_manifest(loaded) -> dict[str, Any]:
    """The manifest's `heads_semantics` entry."""
    semantics = heads_semantics_of(loaded)
    chosen = ("override" if getattr(loaded, "heads_semantics", None) else
              f"checkpoint config ({TRAINED_WITH_KEY})" if loaded.weights.get("trained_heads_semantics") else
              "checkpoint origin")
    entry = {**asdict(semantics), "chosen_by": chosen,
             "default_for_weights": default_heads_semantics(loaded.weights)}
    entry["heads_inputs"] = ("unchanged: fpn_0..2, text_features, attention_mask; attention_mask is 1 where "
                             + semantics.text_valid)
    if semantics.geometry_token:
        entry["geometry_token_detail"] = ("inside the heads graph: the geometry encoder's token for the empty prompt "
                                   "(no boxes) is appended after the text tokens, always valid")
    return entry


class EmptyPromptGeometryToken(nn.Module):
    """The geometry encoder's output for a prompt with no boxes: its CLS embedding, projected and normalised,
    through its layers (self-attention over that one token, cross-attention to the last FPN level the heads
    use, MLP), then its output norm. [B, 1, W]. Uses the model's own modules and weights."""

    def __init__(self, geometry_encoder: nn.Module):
        super().__init__()
        self.encoder = geometry_encoder

    def forward(self, vision_features: torch.Tensor, vision_positions: torch.Tensor) -> torch.Tensor:
        # vision_features, vision_positions: [B, C, H, W] (the 1x level, fpn_2, and its sine encoding)
        geo = self.encoder
        batch = vision_features.shape[0]
        flat = vision_features.flatten(2).transpose(1, 2)  # [B, H*W, C]
        flat_positions = vision_positions.flatten(2).transpose(1, 2)
        token = geo.cls_embed.weight[None].expand(batch, -1, -1)  # [B, 1, C]
        token = geo.prompt_layer_norm(geo.final_proj(token))
        for layer in geo.layers:
            # One always-valid token: a mask would change nothing (softmax over one key).
            token = layer(prompt_feats=token, vision_feats=flat, vision_pos_encoding=flat_positions, prompt_mask=None)
        return geo.output_layer_norm(token)


def append_geometry_token(token_maker: EmptyPromptGeometryToken, text_features: torch.Tensor,
                          attention_mask: torch.Tensor, vision_features: torch.Tensor,
                          vision_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L, W] text features and [B, L] mask -> [B, L + 1, W] and [B, L + 1], the token last and valid,
    as upstream concatenates text then geometry."""
    token = token_maker(vision_features, vision_positions).to(text_features.dtype)
    features = torch.cat([text_features, token], dim=1)
    mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
    return features, mask
