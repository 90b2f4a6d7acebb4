"""Upstream (PyTorch .pt) SAM3 / SAM3-LiteText checkpoints <-> transformers state dicts.

Upstream checkpoints are the files the original projects publish:

* SAM3 (facebookresearch/sam3): ``sam3.pt``. Its keys are ``detector.*`` (the image detector) and
  ``tracker.*`` (the video tracker, not used here), at the top level or under ``"model"``.
* SAM3-LiteText (SimonZeng7108/efficientsam3): ``sam3_litetext_mobileclip_{s0,s1}_ctx{16,32}.pt`` and
  ``sam3_litetext_mobileclip2_l_ctx{16,32}.pt``, ``{"model": state_dict}``, keys prefixed ``detector.``.
  The same detector as SAM3, except that the text encoder is a MobileCLIP student
  (``backbone.language_backbone.encoder.*``) with a linear projection to 256
  (``backbone.language_backbone.projector``).

Summary (upstream, after ``detector.``              ->  transformers):

    backbone.vision_backbone.trunk.*                      vision_encoder.backbone.*   (ViT-L; qkv split)
    backbone.vision_backbone.convs.{i}.*                  vision_encoder.neck.fpn_layers.{i}.*
    backbone.language_backbone.encoder.*  (sam3: CLIP)    text_encoder.text_model.*   (+ text_encoder.text_projection)
    backbone.language_backbone.resizer.*  (sam3)          text_projection.*           (width -> 256)
    backbone.language_backbone.encoder.*  (MobileCLIP)    text_encoder.*
    backbone.language_backbone.projector.* (litetext)     text_projection.*           (width -> 256)
    geometry_encoder.{encode.{i},norm,img_pre_norm,...}   geometry_encoder.{layers.{i},prompt_layer_norm,...}
    transformer.encoder.layers.{i}.*                      detr_encoder.layers.{i}.*
    transformer.decoder.*                                 detr_decoder.*
    dot_prod_scoring.*                                    dot_product_scoring.*
    segmentation_head.*                                   mask_decoder.*
    tracker.* ; see IGNORED_UPSTREAM                      (dropped, reported in `ignored`)

The key tables below read the upstream key *after* ``detector.`` is removed. Placeholders:
``{i}`` a layer number, ``{wb}`` ``weight|bias``, ``{bn}`` a BatchNorm2d entry
(``weight|bias|running_mean|running_var|num_batches_tracked``), ``{qkv}`` one of ``q|k|v``.
Each row is ``(upstream pattern, transformers pattern, operation)``:

* ``rename``: same tensor, new name.
* ``split_qkv``: an upstream fused input projection (``[3*d, d]`` weight / ``[3*d]`` bias, rows ordered
  q, k, v) becomes three transformers tensors ``q_proj``, ``k_proj``, ``v_proj`` (``torch.chunk(3, dim=0)``).
  This holds for ``nn.MultiheadAttention.in_proj_*``, the ViT's ``attn.qkv`` and MobileCLIP's
  ``qkv_proj`` (all three reshape the fused output as ``(..., 3, heads, head_dim)``).
* ``transpose``: upstream stores a projection matrix P used as ``x @ P``; ``nn.Linear`` stores ``P.T``.
* ``vit_pos``: upstream's ViT position table has a leading class-token row (``[1, 1 + H*W, C]``) that the
  upstream model never adds to patches; transformers stores only ``[1, H*W, C]``. The row is dropped
  (and written back as zeros by ``hf_to_upstream``).
* ``text_pos``: the MobileCLIP student's position table ``[1, 1, N, C]``. Upstream LiteText checkpoints
  keep MobileCLIP's 77 rows whatever their ``ctx16`` / ``ctx32`` name says; upstream *slices* the first
  16 / 32 rows after loading (``resize_pos_embed``). ``upstream_to_hf(..., context_length=16)`` does the
  same slicing; without it the table keeps all stored rows (and transformers would then *interpolate*
  77 -> 16 at run time, which is not what upstream computes).

Keys in ``IGNORED_UPSTREAM`` are deliberately dropped (the detector-image model has no place for them);
any other key no rule matches is reported in ``UpstreamConversion.unmapped`` so the caller can fail.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("sam3", "litetext")
DETECTOR_PREFIX = "detector."
TRACKER_PREFIX = "tracker."

RENAME, SPLIT_QKV, TRANSPOSE, VIT_POS, TEXT_POS = "rename", "split_qkv", "transpose", "vit_pos", "text_pos"

# ---------------------------------------------------------------------------------------------------------
# Mapping tables: (upstream pattern, transformers pattern, operation)
# ---------------------------------------------------------------------------------------------------------

_VIT = "backbone.vision_backbone.trunk."
_NECK = "backbone.vision_backbone.convs."
_HF_VIT = "vision_encoder.backbone."
_HF_NECK = "vision_encoder.neck.fpn_layers."


def _attention(up: str, hf: str, hf_out: str = "o_proj") -> tuple[tuple[str, str, str], ...]:
    """Rows for an upstream nn.MultiheadAttention at `up` (fused in_proj) and its transformers twin at `hf`."""
    return (
        (f"{up}.in_proj_{{wb}}", f"{hf}.{{qkv}}_proj.{{wb}}", SPLIT_QKV),
        (f"{up}.out_proj.{{wb}}", f"{hf}.{hf_out}.{{wb}}", RENAME),
    )


# Shared by both families: ViT-L vision backbone, FPN neck, geometry encoder, DETR encoder/decoder,
# dot-product scoring and mask decoder (identical modules in SAM3 and LiteText).
COMMON_RULES: tuple[tuple[str, str, str], ...] = (
    # --- ViT backbone
    (f"{_VIT}pos_embed", f"{_HF_VIT}embeddings.position_embeddings", VIT_POS),  # drops the cls-token row
    (f"{_VIT}patch_embed.proj.weight", f"{_HF_VIT}embeddings.patch_embeddings.projection.weight", RENAME),  # no bias
    (f"{_VIT}ln_pre.{{wb}}", f"{_HF_VIT}layer_norm.{{wb}}", RENAME),
    (f"{_VIT}blocks.{{i}}.norm1.{{wb}}", f"{_HF_VIT}layers.{{i}}.layer_norm1.{{wb}}", RENAME),
    (f"{_VIT}blocks.{{i}}.norm2.{{wb}}", f"{_HF_VIT}layers.{{i}}.layer_norm2.{{wb}}", RENAME),
    (f"{_VIT}blocks.{{i}}.attn.qkv.{{wb}}", f"{_HF_VIT}layers.{{i}}.attention.{{qkv}}_proj.{{wb}}", SPLIT_QKV),
    (f"{_VIT}blocks.{{i}}.attn.proj.{{wb}}", f"{_HF_VIT}layers.{{i}}.attention.o_proj.{{wb}}", RENAME),
    (f"{_VIT}blocks.{{i}}.mlp.fc1.{{wb}}", f"{_HF_VIT}layers.{{i}}.mlp.fc1.{{wb}}", RENAME),
    (f"{_VIT}blocks.{{i}}.mlp.fc2.{{wb}}", f"{_HF_VIT}layers.{{i}}.mlp.fc2.{{wb}}", RENAME),
    # --- FPN neck. transformers keeps each level's upsampling as a ModuleList with the GELU at index 1:
    # level 0 (4x) = [deconv, GELU, deconv], level 1 (2x) = [deconv], level 3 (0.5x) = [maxpool, no weights].
    (f"{_NECK}{{i}}.dconv_2x2_0.{{wb}}", f"{_HF_NECK}{{i}}.scale_layers.0.{{wb}}", RENAME),
    (f"{_NECK}{{i}}.dconv_2x2_1.{{wb}}", f"{_HF_NECK}{{i}}.scale_layers.2.{{wb}}", RENAME),
    (f"{_NECK}{{i}}.dconv_2x2.{{wb}}", f"{_HF_NECK}{{i}}.scale_layers.0.{{wb}}", RENAME),  # see _NECK_2X note
    (f"{_NECK}{{i}}.conv_1x1.{{wb}}", f"{_HF_NECK}{{i}}.proj1.{{wb}}", RENAME),
    (f"{_NECK}{{i}}.conv_3x3.{{wb}}", f"{_HF_NECK}{{i}}.proj2.{{wb}}", RENAME),
    # --- Geometry (box prompt) encoder
    ("geometry_encoder.label_embed.weight", "geometry_encoder.label_embed.weight", RENAME),
    ("geometry_encoder.cls_embed.weight", "geometry_encoder.cls_embed.weight", RENAME),
    ("geometry_encoder.boxes_direct_project.{wb}", "geometry_encoder.boxes_direct_project.{wb}", RENAME),
    ("geometry_encoder.boxes_pool_project.{wb}", "geometry_encoder.boxes_pool_project.{wb}", RENAME),
    ("geometry_encoder.boxes_pos_enc_project.{wb}", "geometry_encoder.boxes_pos_enc_project.{wb}", RENAME),
    ("geometry_encoder.final_proj.{wb}", "geometry_encoder.final_proj.{wb}", RENAME),
    ("geometry_encoder.norm.{wb}", "geometry_encoder.prompt_layer_norm.{wb}", RENAME),
    ("geometry_encoder.img_pre_norm.{wb}", "geometry_encoder.vision_layer_norm.{wb}", RENAME),
    ("geometry_encoder.encode_norm.{wb}", "geometry_encoder.output_layer_norm.{wb}", RENAME),
    *_attention("geometry_encoder.encode.{i}.self_attn", "geometry_encoder.layers.{i}.self_attn"),
    *_attention("geometry_encoder.encode.{i}.cross_attn_image", "geometry_encoder.layers.{i}.cross_attn"),
    ("geometry_encoder.encode.{i}.linear1.{wb}", "geometry_encoder.layers.{i}.mlp.fc1.{wb}", RENAME),
    ("geometry_encoder.encode.{i}.linear2.{wb}", "geometry_encoder.layers.{i}.mlp.fc2.{wb}", RENAME),
    ("geometry_encoder.encode.{i}.norm1.{wb}", "geometry_encoder.layers.{i}.layer_norm1.{wb}", RENAME),
    ("geometry_encoder.encode.{i}.norm2.{wb}", "geometry_encoder.layers.{i}.layer_norm2.{wb}", RENAME),
    ("geometry_encoder.encode.{i}.norm3.{wb}", "geometry_encoder.layers.{i}.layer_norm3.{wb}", RENAME),
    # --- DETR encoder (pre-norm: norm1 -> self-attn, norm2 -> image cross-attn, norm3 -> MLP)
    *_attention("transformer.encoder.layers.{i}.self_attn", "detr_encoder.layers.{i}.self_attn"),
    *_attention("transformer.encoder.layers.{i}.cross_attn_image", "detr_encoder.layers.{i}.cross_attn"),
    ("transformer.encoder.layers.{i}.linear1.{wb}", "detr_encoder.layers.{i}.mlp.fc1.{wb}", RENAME),
    ("transformer.encoder.layers.{i}.linear2.{wb}", "detr_encoder.layers.{i}.mlp.fc2.{wb}", RENAME),
    ("transformer.encoder.layers.{i}.norm1.{wb}", "detr_encoder.layers.{i}.layer_norm1.{wb}", RENAME),
    ("transformer.encoder.layers.{i}.norm2.{wb}", "detr_encoder.layers.{i}.layer_norm2.{wb}", RENAME),
    ("transformer.encoder.layers.{i}.norm3.{wb}", "detr_encoder.layers.{i}.layer_norm3.{wb}", RENAME),
    # --- DETR decoder. Upstream MLPs are `layers.0..n-1`; transformers names them `layer1..n` (+1 shift).
    ("transformer.decoder.query_embed.weight", "detr_decoder.query_embed.weight", RENAME),
    ("transformer.decoder.reference_points.weight", "detr_decoder.reference_points.weight", RENAME),
    ("transformer.decoder.presence_token.weight", "detr_decoder.presence_token.weight", RENAME),
    ("transformer.decoder.presence_token_head.layers.0.{wb}", "detr_decoder.presence_head.layer1.{wb}", RENAME),
    ("transformer.decoder.presence_token_head.layers.1.{wb}", "detr_decoder.presence_head.layer2.{wb}", RENAME),
    ("transformer.decoder.presence_token_head.layers.2.{wb}", "detr_decoder.presence_head.layer3.{wb}", RENAME),
    ("transformer.decoder.presence_token_out_norm.{wb}", "detr_decoder.presence_layer_norm.{wb}", RENAME),
    ("transformer.decoder.norm.{wb}", "detr_decoder.output_layer_norm.{wb}", RENAME),
    ("transformer.decoder.bbox_embed.layers.0.{wb}", "detr_decoder.box_head.layer1.{wb}", RENAME),
    ("transformer.decoder.bbox_embed.layers.1.{wb}", "detr_decoder.box_head.layer2.{wb}", RENAME),
    ("transformer.decoder.bbox_embed.layers.2.{wb}", "detr_decoder.box_head.layer3.{wb}", RENAME),
    ("transformer.decoder.ref_point_head.layers.0.{wb}", "detr_decoder.ref_point_head.layer1.{wb}", RENAME),
    ("transformer.decoder.ref_point_head.layers.1.{wb}", "detr_decoder.ref_point_head.layer2.{wb}", RENAME),
    ("transformer.decoder.boxRPB_embed_x.layers.0.{wb}", "detr_decoder.box_rpb_embed_x.layer1.{wb}", RENAME),
    ("transformer.decoder.boxRPB_embed_x.layers.1.{wb}", "detr_decoder.box_rpb_embed_x.layer2.{wb}", RENAME),
    ("transformer.decoder.boxRPB_embed_y.layers.0.{wb}", "detr_decoder.box_rpb_embed_y.layer1.{wb}", RENAME),
    ("transformer.decoder.boxRPB_embed_y.layers.1.{wb}", "detr_decoder.box_rpb_embed_y.layer2.{wb}", RENAME),
    *_attention("transformer.decoder.layers.{i}.self_attn", "detr_decoder.layers.{i}.self_attn"),
    # `ca_text` is the cross-attention to text; upstream `cross_attn` is the one to image features.
    *_attention("transformer.decoder.layers.{i}.ca_text", "detr_decoder.layers.{i}.text_cross_attn"),
    *_attention("transformer.decoder.layers.{i}.cross_attn", "detr_decoder.layers.{i}.vision_cross_attn"),
    ("transformer.decoder.layers.{i}.linear1.{wb}", "detr_decoder.layers.{i}.mlp.fc1.{wb}", RENAME),
    ("transformer.decoder.layers.{i}.linear2.{wb}", "detr_decoder.layers.{i}.mlp.fc2.{wb}", RENAME),
    # Post-norms named by position upstream: norm1 follows the image cross-attn, norm2 the self-attn.
    ("transformer.decoder.layers.{i}.norm1.{wb}", "detr_decoder.layers.{i}.vision_cross_attn_layer_norm.{wb}", RENAME),
    ("transformer.decoder.layers.{i}.catext_norm.{wb}", "detr_decoder.layers.{i}.text_cross_attn_layer_norm.{wb}", RENAME),
    ("transformer.decoder.layers.{i}.norm2.{wb}", "detr_decoder.layers.{i}.self_attn_layer_norm.{wb}", RENAME),
    ("transformer.decoder.layers.{i}.norm3.{wb}", "detr_decoder.layers.{i}.mlp_layer_norm.{wb}", RENAME),
    # --- Dot-product scoring (`prompt` = the text side, `hs` = decoder queries)
    ("dot_prod_scoring.prompt_mlp.layers.0.{wb}", "dot_product_scoring.text_mlp.layer1.{wb}", RENAME),
    ("dot_prod_scoring.prompt_mlp.layers.1.{wb}", "dot_product_scoring.text_mlp.layer2.{wb}", RENAME),
    ("dot_prod_scoring.prompt_mlp.out_norm.{wb}", "dot_product_scoring.text_mlp_out_norm.{wb}", RENAME),
    ("dot_prod_scoring.prompt_proj.{wb}", "dot_product_scoring.text_proj.{wb}", RENAME),
    ("dot_prod_scoring.hs_proj.{wb}", "dot_product_scoring.query_proj.{wb}", RENAME),
    # --- Mask decoder (upstream "segmentation_head")
    ("segmentation_head.pixel_decoder.conv_layers.{i}.{wb}", "mask_decoder.pixel_decoder.conv_layers.{i}.{wb}", RENAME),
    ("segmentation_head.pixel_decoder.norms.{i}.{wb}", "mask_decoder.pixel_decoder.norms.{i}.{wb}", RENAME),
    ("segmentation_head.mask_predictor.mask_embed.layers.{i}.{wb}", "mask_decoder.mask_embedder.layers.{i}.{wb}", RENAME),
    ("segmentation_head.instance_seg_head.{wb}", "mask_decoder.instance_projection.{wb}", RENAME),
    ("segmentation_head.semantic_seg_head.{wb}", "mask_decoder.semantic_projection.{wb}", RENAME),
    *_attention("segmentation_head.cross_attend_prompt", "mask_decoder.prompt_cross_attn"),
    ("segmentation_head.cross_attn_norm.{wb}", "mask_decoder.prompt_cross_attn_norm.{wb}", RENAME),
)

_CLIP = "backbone.language_backbone.encoder."
_HF_CLIP = "text_encoder.text_model."

# SAM3 teacher text encoder: OpenAI-CLIP-style (VETextEncoder, width 1024, 24 layers, 32 positions)
# -> transformers CLIPTextModelWithProjection; `resizer` is the linear map to the DETR width (256).
SAM3_TEXT_RULES: tuple[tuple[str, str, str], ...] = (
    (f"{_CLIP}token_embedding.weight", f"{_HF_CLIP}embeddings.token_embedding.weight", RENAME),
    (f"{_CLIP}positional_embedding", f"{_HF_CLIP}embeddings.position_embedding.weight", RENAME),  # [32, d]
    *_attention(f"{_CLIP}transformer.resblocks.{{i}}.attn", f"{_HF_CLIP}encoder.layers.{{i}}.self_attn", "out_proj"),
    (f"{_CLIP}transformer.resblocks.{{i}}.ln_1.{{wb}}", f"{_HF_CLIP}encoder.layers.{{i}}.layer_norm1.{{wb}}", RENAME),
    (f"{_CLIP}transformer.resblocks.{{i}}.ln_2.{{wb}}", f"{_HF_CLIP}encoder.layers.{{i}}.layer_norm2.{{wb}}", RENAME),
    (f"{_CLIP}transformer.resblocks.{{i}}.mlp.c_fc.{{wb}}", f"{_HF_CLIP}encoder.layers.{{i}}.mlp.fc1.{{wb}}", RENAME),
    (f"{_CLIP}transformer.resblocks.{{i}}.mlp.c_proj.{{wb}}", f"{_HF_CLIP}encoder.layers.{{i}}.mlp.fc2.{{wb}}", RENAME),
    (f"{_CLIP}ln_final.{{wb}}", f"{_HF_CLIP}final_layer_norm.{{wb}}", RENAME),
    # CLIP's pooled projection, stored [width, proj] and applied as x @ P. Unused by SAM3 (it reads every
    # token through `resizer`), but kept so the transformers model loads strictly.
    (f"{_CLIP}text_projection", "text_encoder.text_projection.weight", TRANSPOSE),
    ("backbone.language_backbone.resizer.{wb}", "text_projection.{wb}", RENAME),
)

_MC = "backbone.language_backbone.encoder."
_HF_MC = "text_encoder."

# SAM3-LiteText student: MobileCLIP text transformer (mobileclip `TextTransformer`); `projector` maps its
# width to the DETR width (256). S0 ("mct" variant): layers 0 and N-1 are RepMixer blocks, the others
# pre-norm transformer layers. S1 and MobileCLIP2-L ("base" variant): transformer layers only.
_MCL = f"{_MC}transformer.{{i}}."  # one MobileCLIP layer
_HF_MCL = f"{_HF_MC}layers.{{i}}."

LITETEXT_TEXT_RULES: tuple[tuple[str, str, str], ...] = (
    (f"{_MC}embedding_layer.weight", f"{_HF_MC}embeddings.token_embedding.weight", RENAME),
    (f"{_MC}positional_embedding.pos_embed.pos_embed",
     f"{_HF_MC}embeddings.position_embedding.position_embedding", TEXT_POS),
    (f"{_MC}final_layer_norm.{{wb}}", f"{_HF_MC}final_layer_norm.{{wb}}", RENAME),
    # MobileCLIP's pooled projection, stored [width, width] and applied as x @ P (so nn.Linear holds P.T).
    # Unused by SAM3-LiteText (it projects every token through `projector`); kept for strict loading.
    (f"{_MC}projection_layer", f"{_HF_MC}projection.weight", TRANSPOSE),
    ("backbone.language_backbone.projector.{wb}", "text_projection.{wb}", RENAME),
    # Transformer layer = pre_norm_mha (0: LayerNorm, 1: MultiHeadAttention, 2: Dropout)
    #                   + pre_norm_ffn (0: LayerNorm, 1: Linear, 2: GELU, 3: Dropout, 4: Linear, 5: Dropout).
    (f"{_MCL}pre_norm_mha.0.{{wb}}", f"{_HF_MCL}layer_norm1.{{wb}}", RENAME),
    (f"{_MCL}pre_norm_mha.1.qkv_proj.{{wb}}", f"{_HF_MCL}self_attn.{{qkv}}_proj.{{wb}}", SPLIT_QKV),
    (f"{_MCL}pre_norm_mha.1.out_proj.{{wb}}", f"{_HF_MCL}self_attn.out_proj.{{wb}}", RENAME),
    (f"{_MCL}pre_norm_ffn.0.{{wb}}", f"{_HF_MCL}layer_norm2.{{wb}}", RENAME),
    (f"{_MCL}pre_norm_ffn.1.{{wb}}", f"{_HF_MCL}mlp.fc1.{{wb}}", RENAME),
    (f"{_MCL}pre_norm_ffn.4.{{wb}}", f"{_HF_MCL}mlp.fc2.{{wb}}", RENAME),
    # RepMixer block, train-time (un-fused) form, on (B, C, 1, L):
    #   x = x + token_mixer.layer_scale * (mixer(x) - norm(x)),  mixer(x) = BN(dwconv(x)) + BN_skip(x)
    #   x = x + layer_scale * convffn(x),                        convffn = fc2(GELU(fc1(BN(dwconv(x)))))
    # `token_mixer.norm` is a MobileOneBlock with only its skip BatchNorm -> `reference_batchnorm`.
    (f"{_MCL}layer_scale", f"{_HF_MCL}layer_scale", RENAME),
    (f"{_MCL}token_mixer.layer_scale", f"{_HF_MCL}token_mixer.layer_scale", RENAME),
    (f"{_MCL}token_mixer.norm.rbr_skip.{{bn}}", f"{_HF_MCL}token_mixer.reference_batchnorm.{{bn}}", RENAME),
    (f"{_MCL}token_mixer.mixer.rbr_skip.{{bn}}", f"{_HF_MCL}token_mixer.mixer.batchnorm_skip.{{bn}}", RENAME),
    (f"{_MCL}token_mixer.mixer.rbr_conv.0.conv.weight", f"{_HF_MCL}token_mixer.mixer.conv.weight", RENAME),
    (f"{_MCL}token_mixer.mixer.rbr_conv.0.bn.{{bn}}", f"{_HF_MCL}token_mixer.mixer.batchnorm_conv.{{bn}}", RENAME),
    (f"{_MCL}convffn.conv.conv.weight", f"{_HF_MCL}conv_feed_forward.depthwise_conv.weight", RENAME),
    (f"{_MCL}convffn.conv.bn.{{bn}}", f"{_HF_MCL}conv_feed_forward.depthwise_batchnorm.{{bn}}", RENAME),
    (f"{_MCL}convffn.fc1.{{wb}}", f"{_HF_MCL}conv_feed_forward.mlp.fc1.{{wb}}", RENAME),
    (f"{_MCL}convffn.fc2.{{wb}}", f"{_HF_MCL}conv_feed_forward.mlp.fc2.{{wb}}", RENAME),
    # Not mapped on purpose: a re-parameterized RepMixer (`token_mixer.reparam_conv.*`) has no
    # train-time branches to give transformers; such keys come back in `unmapped`.
)

# Upstream keys (after `detector.`) that the transformers detector-image model has no place for.
# `tracker.*` (outside `detector.`) is dropped as well. {rest} matches anything.
IGNORED_UPSTREAM: tuple[tuple[str, str], ...] = (
    ("backbone.vision_backbone.sam2_convs.{rest}",
     "SAM2-style FPN branch that feeds only the video tracker"),
    (f"{_VIT}blocks.{{i}}.attn.freqs_cis",
     "precomputed complex RoPE table (a buffer); transformers computes rotary embeddings itself"),
    ("geometry_encoder.points_direct_project.{rest}", "point-prompt encoder; transformers SAM3 takes boxes only"),
    ("geometry_encoder.points_pool_project.{rest}", "point-prompt encoder; transformers SAM3 takes boxes only"),
    ("geometry_encoder.points_pos_enc_project.{rest}", "point-prompt encoder; transformers SAM3 takes boxes only"),
)

# The FPN's level-1 2x deconv (`dconv_2x2`) and level-0's first 4x deconv (`dconv_2x2_0`) share the
# transformers name `scale_layers.0`; going back, a level that also has `scale_layers.2` is the 4x one.
_NECK_2X_UP = f"{_NECK}{{i}}.dconv_2x2.{{wb}}"
_NECK_4X_UP = f"{_NECK}{{i}}.dconv_2x2_0.{{wb}}"

_PLACEHOLDERS = {
    "i": r"\d+",
    "wb": r"weight|bias",
    "bn": r"weight|bias|running_mean|running_var|num_batches_tracked",
    "qkv": r"[qkv]",
    "rest": r".+",
}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    out = []
    for n, part in enumerate(parts):
        out.append(f"(?P<{part}>{_PLACEHOLDERS[part]})" if n % 2 else re.escape(part))
    return re.compile("".join(out))


@dataclass(frozen=True)
class _Rule:
    up: str
    hf: str
    op: str
    up_re: re.Pattern[str]
    hf_re: re.Pattern[str]


def _rules(table) -> tuple[_Rule, ...]:
    return tuple(_Rule(up, hf, op, _compile(up), _compile(hf)) for up, hf, op in table)


_RULES = {
    "sam3": _rules(COMMON_RULES + SAM3_TEXT_RULES),
    "litetext": _rules(COMMON_RULES + LITETEXT_TEXT_RULES),
}
_IGNORED = tuple((_compile(pattern), reason) for pattern, reason in IGNORED_UPSTREAM)


@dataclass
class UpstreamConversion:
    """What `upstream_to_hf` made of an upstream state dict."""

    state_dict: dict[str, torch.Tensor]  # transformers keys
    unmapped: list[str] = field(default_factory=list)  # upstream keys no rule knows: the caller should fail
    ignored: list[str] = field(default_factory=list)  # upstream keys dropped on purpose (IGNORED_UPSTREAM)
    synthesized: list[str] = field(default_factory=list)  # transformers keys made without an upstream tensor
    notes: list[str] = field(default_factory=list)  # reshapes worth knowing (position tables)
    text_positions_stored: int | None = None  # rows in the upstream text position table

    def raise_for_unmapped(self, source: str = "checkpoint") -> None:
        if self.unmapped:
            more = f", ... {len(self.unmapped) - 5} more" if len(self.unmapped) > 5 else ""
            raise ValueError(
                f"{source} has {len(self.unmapped)} keys no upstream rule knows: {', '.join(self.unmapped[:5])}{more}"
            )


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


def _fill(template: str, groups: Mapping[str, str], **extra: str) -> str:
    values = {**groups, **extra}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def _owned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor with its own storage (views of one upstream tensor must not share memory:
    safetensors refuses to save shared tensors)."""
    return t.clone(memory_format=torch.contiguous_format)


def upstream_to_hf(
    state_dict: Mapping[str, torch.Tensor], family: str, *, context_length: int | None = None
) -> UpstreamConversion:
    """Convert an upstream detector state dict (keys `detector.*`, optionally `tracker.*`) to the keys of
    transformers `Sam3Model` (family "sam3") or `Sam3LiteTextModel` (family "litetext").

    `context_length` (LiteText only) slices the student's position table to its first `context_length`
    rows, as upstream does after loading; it must not exceed the stored rows. Never raises for unknown
    keys: they are returned in `unmapped`.
    """
    _check_family(family)
    rules = _RULES[family]
    result = UpstreamConversion(state_dict={})
    out = result.state_dict
    source_of: dict[str, str] = {}

    def put(hf_key: str, tensor: torch.Tensor, up_key: str) -> None:
        if hf_key in out:
            raise ValueError(f"upstream keys {source_of[hf_key]} and {up_key} both map to {hf_key}")
        out[hf_key] = tensor
        source_of[hf_key] = up_key

    for key, tensor in state_dict.items():
        if key.startswith(TRACKER_PREFIX):
            result.ignored.append(key)
            continue
        if not key.startswith(DETECTOR_PREFIX):
            result.unmapped.append(key)
            continue
        name = key[len(DETECTOR_PREFIX):]
        if any(pattern.fullmatch(name) for pattern, _ in _IGNORED):
            result.ignored.append(key)
            continue
        for rule in rules:
            match = rule.up_re.fullmatch(name)
            if match is None:
                continue
            groups = match.groupdict()
            if rule.op == SPLIT_QKV:
                if tensor.shape[0] % 3:
                    raise ValueError(f"{key}: fused q/k/v tensor of shape {tuple(tensor.shape)} does not split in 3")
                for part, chunk in zip("qkv", torch.chunk(tensor, 3, dim=0)):
                    put(_fill(rule.hf, groups, qkv=part), _owned(chunk), key)
            elif rule.op == TRANSPOSE:
                put(_fill(rule.hf, groups), _owned(tensor.t()), key)
            elif rule.op == VIT_POS:
                put(_fill(rule.hf, groups), _owned(tensor[:, 1:, :]), key)
                result.notes.append(f"{key}: dropped the class-token row, {tensor.shape[1]} -> {tensor.shape[1] - 1} positions")
            elif rule.op == TEXT_POS:
                stored = tensor.shape[2]
                result.text_positions_stored = stored
                if context_length is not None and context_length > stored:
                    raise ValueError(
                        f"{key} holds {stored} text positions, fewer than context length {context_length}"
                    )
                if context_length is not None and context_length < stored:
                    tensor = _owned(tensor[:, :, :context_length, :])
                    result.notes.append(f"{key}: kept the first {context_length} of {stored} text positions")
                else:
                    result.notes.append(f"{key}: kept all {stored} text positions")
                put(_fill(rule.hf, groups), tensor, key)
            else:
                put(_fill(rule.hf, groups), tensor, key)
            break
        else:
            result.unmapped.append(key)

    # BatchNorm's step counter only matters when training with momentum=None; give transformers a zero
    # where a checkpoint was saved without it, so strict loading still works.
    for hf_key in [k for k in out if k.endswith(".running_mean")]:
        counter = hf_key[: -len("running_mean")] + "num_batches_tracked"
        if counter not in out:
            out[counter] = torch.tensor(0, dtype=torch.long)
            result.synthesized.append(counter)
    return result


def hf_to_upstream(
    state_dict: Mapping[str, torch.Tensor], family: str, *, text_positions: int | None = None
) -> dict[str, torch.Tensor]:
    """The inverse of `upstream_to_hf`: a transformers state dict -> upstream layout (`detector.*` keys,
    fused q/k/v, transposed projections, a zero class-token row in the ViT position table).

    `text_positions` (LiteText only) pads the student's position table with zero rows up to that many
    (upstream checkpoints store 77). Raises KeyError for a transformers key no rule covers.
    """
    _check_family(family)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        converted = _to_upstream(key, tensor, state_dict, _RULES[family], text_positions)
        if converted is None:
            raise KeyError(f"no upstream rule covers transformers key {key!r} ({family})")
        for up_key, value in converted:
            if up_key in out:
                raise ValueError(f"two transformers keys map back to {up_key}")
            out[up_key] = value
    return out


def _to_upstream(key, tensor, state_dict, rules, text_positions) -> list[tuple[str, torch.Tensor]] | None:
    """The upstream (key, tensor) pairs one transformers tensor becomes: [] for the k/v halves of a
    q/k/v split (written with q), None when no rule matches."""
    for rule in rules:
        match = rule.hf_re.fullmatch(key)
        if match is None:
            continue
        groups = match.groupdict()
        if rule.up in (_NECK_4X_UP, _NECK_2X_UP):
            has_second = _fill(f"{_HF_NECK}{{i}}.scale_layers.2.weight", groups) in state_dict
            if has_second != (rule.up == _NECK_4X_UP):
                continue
        up_key = DETECTOR_PREFIX + _fill(rule.up, groups)
        if rule.op == SPLIT_QKV:
            if groups["qkv"] != "q":
                if _fill(rule.hf, groups, qkv="q") not in state_dict:
                    raise KeyError(f"{key}: the matching q_proj tensor is missing")
                return []
            parts = [state_dict.get(_fill(rule.hf, groups, qkv=p)) for p in "qkv"]
            if any(p is None for p in parts):
                raise KeyError(f"{key}: the matching k_proj / v_proj tensors are missing")
            return [(up_key, torch.cat(parts, dim=0))]
        if rule.op == TRANSPOSE:
            return [(up_key, _owned(tensor.t()))]
        if rule.op == VIT_POS:
            return [(up_key, torch.cat([torch.zeros_like(tensor[:, :1, :]), tensor], dim=1))]
        if rule.op == TEXT_POS and text_positions is not None and text_positions > tensor.shape[2]:
            pad = tensor.new_zeros(*tensor.shape[:2], text_positions - tensor.shape[2], tensor.shape[3])
            return [(up_key, torch.cat([tensor, pad], dim=2))]
        return [(up_key, tensor)]
    return None


def detect_family(state_dict: Mapping[str, Any]) -> str | None:
    """"litetext" if the detector's text encoder is a MobileCLIP student, "sam3" if it is CLIP, else None."""
    if f"{DETECTOR_PREFIX}{_MC}embedding_layer.weight" in state_dict:
        return "litetext"
    if f"{DETECTOR_PREFIX}{_CLIP}token_embedding.weight" in state_dict:
        return "sam3"
    return None


def read_upstream_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an upstream .pt checkpoint's state dict without running code from it
    (`torch.load(weights_only=True)`). Accepts `{"model": sd}`, `{"state_dict": sd}` or a bare state dict.
    Raises ValueError with a one-line message when the file is missing, truncated, not a PyTorch file,
    needs code to unpickle, or holds no `detector.` keys."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(e)
        with open(path, "rb") as f:  # torch's zip format, or a pickle (protocol 2+)
            pickled = zipfile.is_zipfile(f) or f.seek(0) == 0 and f.read(1) == b"\x80"
        if "Unsupported global" in reason or ("Weights only load failed" in str(e) and pickled):  # could run code
            raise ValueError(
                f"checkpoint {path} was refused for safety: it holds objects other than tensors and plain "
                f"containers, which could run code when unpickled ({reason.split(' In PyTorch')[0]}); litetext "
                "never runs code from a file: save the state dict of tensors alone"
            ) from None
        raise ValueError(f"checkpoint {path} is truncated or not a PyTorch file: {reason}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, IndexError, KeyError) as e:
        raise ValueError(f"checkpoint {path} is truncated or not a PyTorch file: {_first_line(e)}") from None

    state = obj
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                state = obj[wrapper]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"checkpoint {path} has entries that are not tensors: {', '.join(map(str, not_tensors[:5]))}")
    if not any(isinstance(k, str) and k.startswith(DETECTOR_PREFIX) for k in state):
        prefixes = sorted({str(k).split(".", 1)[0] for k in state})
        raise ValueError(
            f"checkpoint {path} has no '{DETECTOR_PREFIX}' keys (top-level names: {', '.join(prefixes[:8]) or 'none'}); "
            "expected an upstream SAM3 / SAM3-LiteText detector checkpoint"
        )
    return dict(state)


def _unpickler_reason(error: BaseException) -> str:
    """The specific line of torch's multi-line weights_only error ("Unsupported global: ...",
    "Unsupported operand 110", ...)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    detail = text.split("WeightsUnpickler error:", 1)
    if len(detail) == 2:
        lines = [line.strip() for line in detail[1].splitlines() if line.strip()]
        if lines:
            return lines[0].split(" Please use ", 1)[0]  # drop torch's advice to allowlist it
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


__all__ = [
    "COMMON_RULES",
    "FAMILIES",
    "IGNORED_UPSTREAM",
    "LITETEXT_TEXT_RULES",
    "SAM3_TEXT_RULES",
    "UpstreamConversion",
    "detect_family",
    "hf_to_upstream",
    "read_upstream_checkpoint",
    "upstream_to_hf",
]
