"""EfficientSAM3: SAM3 with its ViT-L image trunk replaced by a distilled EfficientViT, RepViT or TinyViT
student (litetext/models/efficientsam3_trunks.py), paired with any text encoder litetext knows.

The student image encoder (upstream's `ImageStudentEncoder`) is

    pixel_values [B, 3, S, S] -> trunk -> [B, C, h, w]
      -> Conv1x1(C, 1024, no bias) -> BatchNorm -> GELU -> Conv3x3(1024, 1024)   ("head")
      -> bilinear (align_corners=False) to the ViT's grid S/14 (72 at 1008 px) when h, w differ

and takes the ViT's place inside transformers' SAM3 vision encoder (`vision_encoder.backbone`): the FPN
neck, the heads and the text path are SAM3's, unchanged. It hands the neck the same [B, grid*grid, 1024]
tokens the ViT would.

Upstream key map (after `detector.`; the rest of the detector goes through litetext.models.upstream):

    backbone.vision_backbone.trunk.model.backbone.model.{rest}  ->  vision_encoder.backbone.trunk.{rest}
    backbone.vision_backbone.trunk.model.head.{0,1,3}.{rest}    ->  vision_encoder.backbone.head.{0,1,3}.{rest}

Upstream nests the trunk as ListWrapper(.model) -> ImageStudentEncoder(.backbone) -> a per-family
wrapper(.model) -> the trunk; the trunk's own names are kept unchanged (`{rest}`). Like upstream's loader,
a `student_trunk.` segment (stage-1 training checkpoints) is dropped, and ImageNet classifier heads of the
trunk (`classifier.*`, `norm_head.*`, `head.*`), which the detector never runs, are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from litetext.models.efficientsam3_trunks import TRUNKS, TrunkSpec

UPSTREAM_TRUNK = "detector.backbone.vision_backbone.trunk.model.backbone.model."
UPSTREAM_HEAD = "detector.backbone.vision_backbone.trunk.model.head."
HF_TRUNK = "vision_encoder.backbone.trunk."
HF_HEAD = "vision_encoder.backbone.head."
_STUDENT_TRUNK_SEGMENT = "student_trunk."
# Classifier heads of the trunk (ImageNet), present in some trunk checkpoints and never run by the detector.
_TRUNK_CLASSIFIER = re.compile(r"^(classifier|classifier_dist|distill_head|norm_head|head)\.")
# A ViT left in the file (a SAM3 checkpoint given for an EfficientSAM3 preset) is a wrong preset, not noise.
_UPSTREAM_VIT = "detector.backbone.vision_backbone.trunk."


class StudentImageEncoder(nn.Module):
    """Trunk -> 1x1/BN/GELU/3x3 head -> resize to the ViT grid; returns tokens [B, grid*grid, hidden]."""

    def __init__(self, trunk: TrunkSpec, hidden_size: int, grid: int):
        super().__init__()
        self.trunk_name = trunk.name
        self.grid = grid
        self.trunk = trunk.build()
        self.head = nn.Sequential(
            nn.Conv2d(self.trunk.out_channels, hidden_size, 1, bias=False),
            nn.BatchNorm2d(hidden_size),
            nn.GELU(),
            nn.Conv2d(hidden_size, hidden_size, 3, padding=1),
        )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, hidden, grid, grid], as upstream's ImageStudentEncoder returns it."""
        features = self.head(self.trunk(pixel_values))
        if features.shape[-2:] != (self.grid, self.grid):
            features = F.interpolate(features, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return features

    def forward(self, pixel_values: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        features = self.feature_map(pixel_values)
        # The SAM3 vision encoder reshapes [B, grid*grid, C] back to [B, C, grid, grid] for its neck.
        return BaseModelOutput(last_hidden_state=features.flatten(2).transpose(1, 2))


def trunk_grid(trunk: str, image_size: int) -> int:
    """The side of the trunk's output map for a square input: every trunk halves it five times with
    padded stride-2 convolutions ((s - 1) // 2 + 1), so 1008 px -> 32."""
    if trunk not in TRUNKS:
        raise ValueError(f"unknown image trunk {trunk!r}")
    side = image_size
    for _ in range(5):
        side = (side - 1) // 2 + 1
    return side


def interpolates(trunk: str, image_size: int, patch_size: int = 14) -> bool:
    """Whether the student encoder resizes the trunk's map to the ViT grid at this input size."""
    return trunk_grid(trunk, image_size) != image_size // patch_size


def describe_image_encoder(model) -> dict[str, Any]:
    """For a manifest: the ViT, or the student trunk with its output grid and whether it is resized."""
    backbone_config = model.config.vision_config.backbone_config
    size, grid = backbone_config.image_size, backbone_config.image_size // backbone_config.patch_size
    encoder = model.vision_encoder.backbone
    if not isinstance(encoder, StudentImageEncoder):
        return {"kind": "SAM3 ViT", "grid": grid}
    trunk_side = trunk_grid(encoder.trunk_name, size)
    return {
        "kind": "EfficientSAM3 student", "trunk": encoder.trunk_name, "family": TRUNKS[encoder.trunk_name].family,
        "image_size": size, "trunk_grid": trunk_side, "grid": grid,
        "interpolates": trunk_side != grid,  # bilinear, align_corners=False, after the 1x1/BN/GELU/3x3 head
    }


def build_efficientsam3_model(model_class, config, trunk: str):
    """A transformers SAM3 model (`model_class(config)`) whose ViT trunk is replaced by the student encoder.

    The ViT is built with one small layer and discarded at once, so the full ViT-L is never allocated; the
    config keeps its hidden size, image and patch size, which the neck and graphs read."""
    if trunk not in TRUNKS:
        raise ValueError(f"unknown image trunk {trunk!r}; choose one of: {', '.join(TRUNKS)}")
    backbone_config = config.vision_config.backbone_config
    full_depth = (backbone_config.num_hidden_layers, backbone_config.intermediate_size,
                  backbone_config.global_attn_indexes)
    backbone_config.num_hidden_layers, backbone_config.intermediate_size = 1, 8
    backbone_config.global_attn_indexes = [0]
    try:
        model = model_class(config)
    finally:
        (backbone_config.num_hidden_layers, backbone_config.intermediate_size,
         backbone_config.global_attn_indexes) = full_depth
    grid = backbone_config.image_size // backbone_config.patch_size
    model.vision_encoder.backbone = StudentImageEncoder(TRUNKS[trunk], backbone_config.hidden_size, grid)
    model.config.efficientsam3_trunk = trunk  # recorded, so a reader of the config knows the ViT is gone
    return model


def split_upstream_state(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str], list[str]]:
    """Split an upstream EfficientSAM3 state dict into (student image encoder with transformers keys, the
    rest of the detector in upstream keys for litetext.models.upstream, ignored keys, stray ViT keys)."""
    student: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    stray_vit: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(UPSTREAM_TRUNK):
            name = key[len(UPSTREAM_TRUNK):].replace(_STUDENT_TRUNK_SEGMENT, "")
            if _TRUNK_CLASSIFIER.match(name):
                ignored.append(key)
            else:
                student[HF_TRUNK + name] = tensor
        elif key.startswith(UPSTREAM_HEAD):
            student[HF_HEAD + key[len(UPSTREAM_HEAD):]] = tensor
        elif key.startswith(_UPSTREAM_VIT):
            stray_vit.append(key)
        else:
            rest[key] = tensor
    return student, rest, ignored, stray_vit


def hf_to_upstream_student(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse for the student image encoder's tensors (`vision_encoder.backbone.*`)."""
    out = {}
    for key, tensor in state_dict.items():
        if key.startswith(HF_TRUNK):
            out[UPSTREAM_TRUNK + key[len(HF_TRUNK):]] = tensor
        elif key.startswith(HF_HEAD):
            out[UPSTREAM_HEAD + key[len(HF_HEAD):]] = tensor
        else:
            raise KeyError(f"{key} is not a student image encoder tensor")
    return out


def convert_upstream(state_dict: Mapping[str, torch.Tensor], family: str, context_length: int | None) -> Any:
    """An upstream EfficientSAM3 detector state dict -> litetext.models.upstream.UpstreamConversion with
    transformers keys (student image encoder included)."""
    from litetext.models.upstream import upstream_to_hf

    student, rest, ignored, stray_vit = split_upstream_state(state_dict)
    converted = upstream_to_hf(rest, family, context_length=context_length)
    converted.state_dict.update(student)
    converted.ignored.extend(ignored)
    converted.unmapped.extend(stray_vit)
    # BatchNorm step counters the file may lack (litetext.models.upstream does this for the rest).
    for key in [k for k in student if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        if counter not in converted.state_dict:
            converted.state_dict[counter] = torch.tensor(0, dtype=torch.long)
            converted.synthesized.append(counter)
    return converted
