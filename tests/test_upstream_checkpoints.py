"""Upstream .pt checkpoints <-> transformers state dicts (litetext.models.upstream).

Round trips use tiny random models written in the upstream layout; spot checks pin real upstream key
names (from transformers' conversion scripts and the upstream model code) so that a mapping that is
merely self-consistent cannot pass; a small functional re-statement of the MobileCLIP student checks that
the converted weights compute what upstream computes.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from litetext.models.upstream import detect_family, hf_to_upstream, upstream_to_hf
from litetext.models.upstream_files import read_upstream_checkpoint

VISION = dict(
    model_type="sam3_vision_model",
    backbone_config=dict(
        model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, image_size=56, patch_size=14, window_size=2, global_attn_indexes=[1],
        pretrain_image_size=28,
    ),
    fpn_hidden_size=32,
    backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
)
HEADS = dict(
    geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
    detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
    detr_decoder_config=dict(hidden_size=32, num_layers=2, num_attention_heads=2, intermediate_size=64, num_queries=4),
    mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
)
CTX = 16  # the student's context length; upstream files store 77 position rows
LITE_TEXT = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=3,
    num_attention_heads=2, max_position_embeddings=CTX, use_repmixer_blocks=True, repmixer_kernel_size=5,
)
CLIP_TEXT = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
    num_attention_heads=2, max_position_embeddings=32, bos_token_id=62, eos_token_id=63,
)


def build(family: str, seed: int):
    from transformers import Sam3Config, Sam3LiteTextConfig, Sam3LiteTextModel, Sam3Model

    torch.manual_seed(seed)
    if family == "litetext":
        model = Sam3LiteTextModel(Sam3LiteTextConfig(vision_config=VISION, text_config=LITE_TEXT, **HEADS))
    else:
        model = Sam3Model(Sam3Config(vision_config=VISION, text_config=CLIP_TEXT, **HEADS))
    return model.eval()


def randomize_(model, seed: int) -> None:
    """Give every tensor (BatchNorm statistics and layer scales included) distinct random values, so a
    swapped pair of same-shaped tensors changes the result."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.dtype == torch.long:
                tensor.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
            elif key.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)


def input_ids(length: int, vocab: int = 64) -> torch.Tensor:
    ids = torch.zeros(2, length, dtype=torch.long)  # upstream pads with token 0
    ids[0, :5] = torch.tensor([vocab - 2, 7, 9, 11, vocab - 1])  # start, words, end (the largest id)
    ids[1, :3] = torch.tensor([vocab - 2, 13, vocab - 1])
    return ids


def write_upstream(tmp_path, family: str, model) -> tuple[object, dict]:
    upstream = hf_to_upstream(model.state_dict(), family, text_positions=77 if family == "litetext" else None)
    # What real files hold besides the detector-image weights: the tracker and the tracker's FPN branch.
    upstream["tracker.maskmem_backbone.mask_downsampler.encoder.0.weight"] = torch.randn(4, 1, 3, 3)
    upstream["detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight"] = torch.randn(32, 8, 1, 1)
    upstream["detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis"] = torch.randn(4, 8, dtype=torch.complex64)
    upstream["detector.geometry_encoder.points_direct_project.weight"] = torch.randn(32, 2)
    path = tmp_path / f"{family}.pt"
    torch.save({"model": upstream}, path)
    return path, upstream


@pytest.mark.parametrize("family", ["sam3", "litetext"])
def test_round_trip_through_an_upstream_file_is_exact(tmp_path, family):
    source = build(family, seed=0)
    randomize_(source, seed=1)
    path, written = write_upstream(tmp_path, family, source)

    upstream = read_upstream_checkpoint(path)
    assert detect_family(upstream) == family
    converted = upstream_to_hf(upstream, family, context_length=CTX if family == "litetext" else None)
    assert converted.unmapped == []
    assert converted.synthesized == []
    assert sorted(converted.ignored) == sorted(
        k for k in written if k.startswith("tracker.") or "sam2_convs" in k or "freqs_cis" in k or "points_" in k
    )
    if family == "litetext":
        assert converted.text_positions_stored == 77

    target = build(family, seed=5)
    target.load_state_dict(converted.state_dict, strict=True)
    expected, actual = source.state_dict(), target.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        assert torch.equal(actual[key], expected[key]), key

    ids = input_ids(CTX if family == "litetext" else 32)
    with torch.no_grad():
        a = source.get_text_features(input_ids=ids).pooler_output
        b = target.get_text_features(input_ids=ids).pooler_output
        assert torch.equal(a, b)
        pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(2))
        out_a = source(pixel_values=pixels, input_ids=ids[:1])
        out_b = target(pixel_values=pixels, input_ids=ids[:1])
        assert torch.equal(out_a.pred_masks, out_b.pred_masks)
        assert torch.equal(out_a.pred_logits, out_b.pred_logits)


@pytest.mark.parametrize("family", ["sam3", "litetext"])
def test_hf_to_upstream_covers_every_key_and_inverts_exactly(family):
    model = build(family, seed=0)
    randomize_(model, seed=3)
    hf = model.state_dict()
    back = upstream_to_hf(hf_to_upstream(hf, family), family)
    assert back.unmapped == [] and back.ignored == []
    assert back.state_dict.keys() == hf.keys()
    assert all(torch.equal(back.state_dict[k], hf[k]) for k in hf)
    with pytest.raises(KeyError, match="not_a_module"):
        hf_to_upstream({**hf, "not_a_module.weight": torch.zeros(1)}, family)


# Real upstream names (after "detector."), as in transformers' convert_sam3_to_hf.py /
# convert_sam3_lite_text_to_hf.py and the upstream modules -> the transformers names they must become.
COMMON_SPOT_CHECKS = [
    ("backbone.vision_backbone.trunk.blocks.7.attn.proj.weight", "vision_encoder.backbone.layers.7.attention.o_proj.weight"),
    ("backbone.vision_backbone.trunk.ln_pre.bias", "vision_encoder.backbone.layer_norm.bias"),
    ("backbone.vision_backbone.convs.0.dconv_2x2_1.weight", "vision_encoder.neck.fpn_layers.0.scale_layers.2.weight"),
    ("backbone.vision_backbone.convs.1.dconv_2x2.bias", "vision_encoder.neck.fpn_layers.1.scale_layers.0.bias"),
    ("backbone.vision_backbone.convs.3.conv_3x3.weight", "vision_encoder.neck.fpn_layers.3.proj2.weight"),
    ("geometry_encoder.img_pre_norm.weight", "geometry_encoder.vision_layer_norm.weight"),
    ("geometry_encoder.encode.2.cross_attn_image.out_proj.bias", "geometry_encoder.layers.2.cross_attn.o_proj.bias"),
    ("transformer.encoder.layers.5.norm2.weight", "detr_encoder.layers.5.layer_norm2.weight"),
    ("transformer.decoder.layers.3.ca_text.out_proj.weight", "detr_decoder.layers.3.text_cross_attn.o_proj.weight"),
    ("transformer.decoder.layers.3.norm1.weight", "detr_decoder.layers.3.vision_cross_attn_layer_norm.weight"),
    ("transformer.decoder.layers.3.catext_norm.bias", "detr_decoder.layers.3.text_cross_attn_layer_norm.bias"),
    ("transformer.decoder.presence_token_head.layers.2.bias", "detr_decoder.presence_head.layer3.bias"),
    ("transformer.decoder.boxRPB_embed_y.layers.1.weight", "detr_decoder.box_rpb_embed_y.layer2.weight"),
    ("dot_prod_scoring.hs_proj.weight", "dot_product_scoring.query_proj.weight"),
    ("segmentation_head.mask_predictor.mask_embed.layers.2.weight", "mask_decoder.mask_embedder.layers.2.weight"),
    ("segmentation_head.cross_attn_norm.weight", "mask_decoder.prompt_cross_attn_norm.weight"),
]
SAM3_SPOT_CHECKS = [
    ("backbone.language_backbone.encoder.token_embedding.weight", "text_encoder.text_model.embeddings.token_embedding.weight"),
    ("backbone.language_backbone.encoder.positional_embedding", "text_encoder.text_model.embeddings.position_embedding.weight"),
    ("backbone.language_backbone.encoder.transformer.resblocks.23.ln_2.weight", "text_encoder.text_model.encoder.layers.23.layer_norm2.weight"),
    ("backbone.language_backbone.encoder.transformer.resblocks.4.mlp.c_fc.bias", "text_encoder.text_model.encoder.layers.4.mlp.fc1.bias"),
    ("backbone.language_backbone.encoder.transformer.resblocks.4.attn.out_proj.weight", "text_encoder.text_model.encoder.layers.4.self_attn.out_proj.weight"),
    ("backbone.language_backbone.encoder.ln_final.weight", "text_encoder.text_model.final_layer_norm.weight"),
    ("backbone.language_backbone.resizer.weight", "text_projection.weight"),
]
LITETEXT_SPOT_CHECKS = [
    ("backbone.language_backbone.encoder.embedding_layer.weight", "text_encoder.embeddings.token_embedding.weight"),
    ("backbone.language_backbone.encoder.final_layer_norm.bias", "text_encoder.final_layer_norm.bias"),
    ("backbone.language_backbone.projector.weight", "text_projection.weight"),
    ("backbone.language_backbone.projector.bias", "text_projection.bias"),
    ("backbone.language_backbone.encoder.transformer.3.pre_norm_mha.0.weight", "text_encoder.layers.3.layer_norm1.weight"),
    ("backbone.language_backbone.encoder.transformer.3.pre_norm_mha.1.out_proj.bias", "text_encoder.layers.3.self_attn.out_proj.bias"),
    ("backbone.language_backbone.encoder.transformer.3.pre_norm_ffn.0.bias", "text_encoder.layers.3.layer_norm2.bias"),
    ("backbone.language_backbone.encoder.transformer.3.pre_norm_ffn.4.weight", "text_encoder.layers.3.mlp.fc2.weight"),
    ("backbone.language_backbone.encoder.transformer.0.layer_scale", "text_encoder.layers.0.layer_scale"),
    ("backbone.language_backbone.encoder.transformer.5.token_mixer.layer_scale", "text_encoder.layers.5.token_mixer.layer_scale"),
    ("backbone.language_backbone.encoder.transformer.0.token_mixer.norm.rbr_skip.running_var",
     "text_encoder.layers.0.token_mixer.reference_batchnorm.running_var"),
    ("backbone.language_backbone.encoder.transformer.0.token_mixer.mixer.rbr_skip.weight",
     "text_encoder.layers.0.token_mixer.mixer.batchnorm_skip.weight"),
    ("backbone.language_backbone.encoder.transformer.0.token_mixer.mixer.rbr_conv.0.conv.weight",
     "text_encoder.layers.0.token_mixer.mixer.conv.weight"),
    ("backbone.language_backbone.encoder.transformer.5.token_mixer.mixer.rbr_conv.0.bn.num_batches_tracked",
     "text_encoder.layers.5.token_mixer.mixer.batchnorm_conv.num_batches_tracked"),
    ("backbone.language_backbone.encoder.transformer.5.convffn.conv.conv.weight",
     "text_encoder.layers.5.conv_feed_forward.depthwise_conv.weight"),
    ("backbone.language_backbone.encoder.transformer.5.convffn.conv.bn.running_mean",
     "text_encoder.layers.5.conv_feed_forward.depthwise_batchnorm.running_mean"),
    ("backbone.language_backbone.encoder.transformer.5.convffn.fc1.weight", "text_encoder.layers.5.conv_feed_forward.mlp.fc1.weight"),
]


def convert_one(key: str, tensor: torch.Tensor, family: str, **kwargs):
    result = upstream_to_hf({"detector." + key: tensor}, family, **kwargs)
    assert result.unmapped == [] and result.ignored == [], key
    return result


@pytest.mark.parametrize(
    "family,upstream_key,hf_key",
    [("sam3", u, h) for u, h in COMMON_SPOT_CHECKS + SAM3_SPOT_CHECKS]
    + [("litetext", u, h) for u, h in COMMON_SPOT_CHECKS + LITETEXT_SPOT_CHECKS],
)
def test_real_upstream_names_map_to_the_expected_transformers_names(family, upstream_key, hf_key):
    tensor = torch.randn(4, 3)
    result = convert_one(upstream_key, tensor, family)
    # (A lone BatchNorm running_mean also gets a zero num_batches_tracked beside it: see `synthesized`.)
    assert [k for k in result.state_dict if k not in result.synthesized] == [hf_key]
    assert torch.equal(result.state_dict[hf_key], tensor)


@pytest.mark.parametrize(
    "family,upstream_key,hf_prefix",
    [
        ("sam3", "backbone.vision_backbone.trunk.blocks.31.attn.qkv", "vision_encoder.backbone.layers.31.attention."),
        ("sam3", "backbone.language_backbone.encoder.transformer.resblocks.0.attn.in_proj",
         "text_encoder.text_model.encoder.layers.0.self_attn."),
        ("sam3", "transformer.decoder.layers.5.cross_attn.in_proj", "detr_decoder.layers.5.vision_cross_attn."),
        ("sam3", "transformer.encoder.layers.0.cross_attn_image.in_proj", "detr_encoder.layers.0.cross_attn."),
        ("sam3", "segmentation_head.cross_attend_prompt.in_proj", "mask_decoder.prompt_cross_attn."),
        ("litetext", "backbone.language_backbone.encoder.transformer.2.pre_norm_mha.1.qkv_proj",
         "text_encoder.layers.2.self_attn."),
        ("litetext", "geometry_encoder.encode.0.self_attn.in_proj", "geometry_encoder.layers.0.self_attn."),
    ],
)
def test_fused_projections_split_in_q_k_v_order(family, upstream_key, hf_prefix):
    weight = torch.arange(6 * 2, dtype=torch.float32).reshape(6, 2)
    bias = torch.arange(6, dtype=torch.float32)
    # nn.MultiheadAttention names them in_proj_weight / in_proj_bias; Linear-based ones qkv.weight / .bias.
    sep = "_" if upstream_key.endswith("in_proj") else "."
    result = upstream_to_hf(
        {f"detector.{upstream_key}{sep}weight": weight, f"detector.{upstream_key}{sep}bias": bias}, family
    )
    assert result.unmapped == []
    out = result.state_dict
    assert sorted(out) == sorted(f"{hf_prefix}{p}_proj.{wb}" for p in "qkv" for wb in ("weight", "bias"))
    for n, p in enumerate("qkv"):
        assert torch.equal(out[f"{hf_prefix}{p}_proj.weight"], weight[2 * n: 2 * n + 2])
        assert torch.equal(out[f"{hf_prefix}{p}_proj.bias"], bias[2 * n: 2 * n + 2])


def test_reshaped_tensors():
    # ViT: the class-token row of the position table goes.
    pos = torch.randn(1, 5, 3)
    out = convert_one("backbone.vision_backbone.trunk.pos_embed", pos, "sam3").state_dict
    assert torch.equal(out["vision_encoder.backbone.embeddings.position_embeddings"], pos[:, 1:])
    # CLIP / MobileCLIP pooled projections are x @ P upstream, so nn.Linear holds P.T.
    proj = torch.randn(4, 3)
    out = convert_one("backbone.language_backbone.encoder.text_projection", proj, "sam3").state_dict
    assert torch.equal(out["text_encoder.text_projection.weight"], proj.T)
    proj = torch.randn(4, 4)
    out = convert_one("backbone.language_backbone.encoder.projection_layer", proj, "litetext").state_dict
    assert torch.equal(out["text_encoder.projection.weight"], proj.T)
    # MobileCLIP position table: 77 rows stored; upstream keeps the first ctx rows (slicing, not resampling).
    table = torch.randn(1, 1, 77, 4)
    key = "backbone.language_backbone.encoder.positional_embedding.pos_embed.pos_embed"
    hf_key = "text_encoder.embeddings.position_embedding.position_embedding"
    for ctx in (16, 32):
        result = convert_one(key, table, "litetext", context_length=ctx)
        assert torch.equal(result.state_dict[hf_key], table[:, :, :ctx])
        assert result.text_positions_stored == 77
    assert torch.equal(convert_one(key, table, "litetext").state_dict[hf_key], table)
    with pytest.raises(ValueError, match="fewer than context length 78"):
        upstream_to_hf({"detector." + key: table}, "litetext", context_length=78)


def test_batchnorm_counter_is_added_when_a_file_lacks_it():
    prefix = "detector.backbone.language_backbone.encoder.transformer.0.convffn.conv.bn."
    stats = {prefix + n: torch.randn(4) for n in ("weight", "bias", "running_mean", "running_var")}
    result = upstream_to_hf(stats, "litetext")
    counter = "text_encoder.layers.0.conv_feed_forward.depthwise_batchnorm.num_batches_tracked"
    assert result.synthesized == [counter]
    assert result.state_dict[counter].dtype == torch.long and int(result.state_dict[counter]) == 0


def reference_student_text(up: dict, ids: torch.Tensor, heads: int, ctx: int) -> torch.Tensor:
    """What upstream's TextStudentEncoder computes (MobileCLIP text transformer, no padding mask, then
    the projector), re-stated with torch.nn.functional from upstream-named tensors."""
    p = "detector.backbone.language_backbone."
    g = lambda name: up[p + name]  # noqa: E731

    def bn(name, x):
        return F.batch_norm(x, g(name + "running_mean"), g(name + "running_var"), g(name + "weight"),
                            g(name + "bias"), False, 0.0, 1e-5)

    def depthwise(weight, x):
        return F.conv2d(x, weight, padding=(0, weight.shape[-1] // 2), groups=x.shape[1])

    x = F.embedding(ids, g("encoder.embedding_layer.weight"))
    batch, length, width = x.shape
    x = x + g("encoder.positional_embedding.pos_embed.pos_embed")[0, 0, :ctx]
    layers = sorted({int(k.split("encoder.transformer.")[1].split(".")[0]) for k in up if "encoder.transformer." in k})
    for i in layers:
        t = f"encoder.transformer.{i}."
        if p + t + "token_mixer.layer_scale" in up:  # RepMixer block, on (B, C, 1, L)
            y = x.transpose(1, 2).unsqueeze(2)
            mixer = bn(t + "token_mixer.mixer.rbr_conv.0.bn.", depthwise(g(t + "token_mixer.mixer.rbr_conv.0.conv.weight"), y))
            mixer = mixer + bn(t + "token_mixer.mixer.rbr_skip.", y)
            y = y + g(t + "token_mixer.layer_scale") * (mixer - bn(t + "token_mixer.norm.rbr_skip.", y))
            ffn = bn(t + "convffn.conv.bn.", depthwise(g(t + "convffn.conv.conv.weight"), y))
            ffn = F.conv2d(F.gelu(F.conv2d(ffn, g(t + "convffn.fc1.weight"), g(t + "convffn.fc1.bias"))),
                           g(t + "convffn.fc2.weight"), g(t + "convffn.fc2.bias"))
            x = (y + g(t + "layer_scale") * ffn).squeeze(2).transpose(1, 2)
        else:  # pre-norm transformer layer; qkv_proj output read as (B, L, 3, heads, head_dim)
            h = F.layer_norm(x, (width,), g(t + "pre_norm_mha.0.weight"), g(t + "pre_norm_mha.0.bias"))
            qkv = F.linear(h, g(t + "pre_norm_mha.1.qkv_proj.weight"), g(t + "pre_norm_mha.1.qkv_proj.bias"))
            q, k, v = qkv.reshape(batch, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q * q.shape[-1] ** -0.5 @ k.transpose(-1, -2), dim=-1) @ v
            attn = attn.transpose(1, 2).reshape(batch, length, width)
            x = x + F.linear(attn, g(t + "pre_norm_mha.1.out_proj.weight"), g(t + "pre_norm_mha.1.out_proj.bias"))
            h = F.layer_norm(x, (width,), g(t + "pre_norm_ffn.0.weight"), g(t + "pre_norm_ffn.0.bias"))
            h = F.gelu(F.linear(h, g(t + "pre_norm_ffn.1.weight"), g(t + "pre_norm_ffn.1.bias")))
            x = x + F.linear(h, g(t + "pre_norm_ffn.4.weight"), g(t + "pre_norm_ffn.4.bias"))
    x = F.layer_norm(x, (width,), g("encoder.final_layer_norm.weight"), g("encoder.final_layer_norm.bias"))
    return F.linear(x, g("projector.weight"), g("projector.bias"))


def test_converted_student_computes_what_upstream_computes():
    source = build("litetext", seed=0)
    randomize_(source, seed=4)
    upstream = hf_to_upstream(source.state_dict(), "litetext", text_positions=77)
    # Distinct values in the 61 stored-but-unused rows: only the first CTX may be used.
    key = "detector.backbone.language_backbone.encoder.positional_embedding.pos_embed.pos_embed"
    upstream[key][:, :, CTX:] = torch.randn(1, 1, 77 - CTX, 32)

    model = build("litetext", seed=9)
    model.load_state_dict(upstream_to_hf(upstream, "litetext", context_length=CTX).state_dict, strict=True)
    ids = input_ids(CTX)
    with torch.no_grad():
        expected = reference_student_text(upstream, ids, heads=2, ctx=CTX)
        actual = model.get_text_features(input_ids=ids).pooler_output  # no attention mask, like upstream
    assert actual.shape == (2, CTX, 32)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_unknown_key_is_reported_not_dropped():
    model = build("litetext", seed=0)
    upstream = hf_to_upstream(model.state_dict(), "litetext")
    odd = {
        "detector.backbone.language_backbone.encoder.transformer.0.token_mixer.reparam_conv.weight": torch.zeros(32, 1, 1, 5),
        "detector.some_new_head.weight": torch.zeros(2),
        "no_prefix.weight": torch.zeros(2),
    }
    result = upstream_to_hf({**upstream, **odd}, "litetext")
    assert sorted(result.unmapped) == sorted(odd)
    with pytest.raises(ValueError, match="3 keys no upstream rule knows"):
        result.raise_for_unmapped()
    # A SAM3 (CLIP) text encoder is not a LiteText one: its keys are unmapped for the other family.
    sam3_up = hf_to_upstream(build("sam3", seed=0).state_dict(), "sam3")
    assert any("resblocks" in k for k in upstream_to_hf(sam3_up, "litetext").unmapped)
    with pytest.raises(ValueError, match="unknown model family"):
        upstream_to_hf(upstream, "sam2")


def test_read_accepts_a_bare_state_dict(tmp_path):
    sd = {"detector.transformer.decoder.norm.weight": torch.ones(3), "tracker.x": torch.zeros(1)}
    torch.save(sd, tmp_path / "bare.pt")
    assert read_upstream_checkpoint(tmp_path / "bare.pt").keys() == sd.keys()


def test_truncated_file_is_a_value_error_naming_it(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": {"detector.transformer.decoder.norm.weight": torch.randn(4096)}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt is truncated or not a PyTorch file") as info:
        read_upstream_checkpoint(truncated)
    assert "\n" not in str(info.value)

    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes\.txt is truncated or not a PyTorch file"):
        read_upstream_checkpoint(garbage)
    with pytest.raises(ValueError, match=r"missing\.pt does not exist"):
        read_upstream_checkpoint(tmp_path / "missing.pt")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_file_that_needs_code_to_load_is_refused(tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"model": {"detector.a": torch.zeros(1)}, "extra": _Payload()}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match=r"code\.pt was refused for safety: it holds objects other than tensors"):
        read_upstream_checkpoint(path)


def test_missing_detector_prefix_is_a_value_error(tmp_path):
    path = tmp_path / "hf_layout.pt"
    torch.save({"model": {"text_encoder.final_layer_norm.weight": torch.ones(2)}}, path)
    with pytest.raises(ValueError, match=r"hf_layout\.pt has no 'detector\.' keys"):
        read_upstream_checkpoint(path)
    not_dict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), not_dict)
    with pytest.raises(ValueError, match=r"tensor\.pt holds a Tensor, not a state dict"):
        read_upstream_checkpoint(not_dict)
