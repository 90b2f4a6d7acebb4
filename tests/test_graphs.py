"""The export wrappers reproduce the transformers models exactly, for both padding semantics."""

import dataclasses

import pytest
import torch

from conftest import tiny_model
from litetext.models.graphs import END_ID, START_ID, build_graph, describe_graphs, get_padding
from litetext.models.presets import PRESETS, build_config
from litetext.errors import LitetextError


def _ids(padding, ctx=16):
    ids = torch.full((3, ctx), padding.pad_id)
    ids[:, 0] = START_ID
    ids[0, 1:4] = torch.tensor([320, 1929, 2368])
    ids[0, 4] = END_ID
    ids[1, 1] = END_ID
    ids[2, 1:ctx - 1] = torch.arange(400, 400 + ctx - 2)
    ids[2, ctx - 1] = END_ID
    ends = (ids == END_ID).int().argmax(1)
    mask = (torch.arange(ctx)[None] <= ends[:, None]).long()
    return ids, mask


@pytest.mark.parametrize("preset", ["litetext-s0", "litetext-s1", "sam3"])
def test_text_graph_equals_transformers_upstream_way(preset):
    """Upstream way: ids padded with 0 and the model run with attention_mask=None."""
    loaded = tiny_model(preset)
    padding = get_padding("upstream")
    ids, mask = _ids(padding)
    with torch.no_grad():
        got = build_graph("text_encoder", loaded, 16, padding)(ids)
        want = loaded.model.get_text_features(input_ids=ids, attention_mask=None).pooler_output
    assert got.shape == (3, 16, 32)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("preset", ["litetext-s0", "sam3"])
def test_text_graph_equals_transformers_masked_way(preset):
    loaded = tiny_model(preset)
    padding = get_padding("transformers")
    ids, mask = _ids(padding)
    with torch.no_grad():
        got = build_graph("text_encoder", loaded, 16, padding)(ids, mask)
        want = loaded.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_padding_semantics_differ_for_students_not_for_teacher():
    """The two paddings give different student features on valid tokens; the causal teacher's agree."""
    for preset, should_differ in [("litetext-s0", True), ("sam3", False)]:
        loaded = tiny_model(preset)
        up, tf = get_padding("upstream"), get_padding("transformers")
        ids_up, mask = _ids(up)
        ids_tf, _ = _ids(tf)
        with torch.no_grad():
            a = build_graph("text_encoder", loaded, 16, up)(ids_up)
            b = build_graph("text_encoder", loaded, 16, tf)(ids_tf, mask)
        valid = mask[0].bool()  # prompt 0 is short: 11 pads
        diff = (a[0, valid] - b[0, valid]).abs().max().item()
        assert (diff > 1e-4) == should_differ, (preset, diff)


def test_position_table_is_interpolated_for_another_context():
    """A table of 16 rows exported at context 32 is the model's own bilinear interpolation."""
    loaded = tiny_model("litetext-s0", context_length=16)
    padding = get_padding("upstream")
    graph = build_graph("text_encoder", loaded, 32, padding)
    assert graph.position_table.shape == (1, 32, 32)
    ids, _ = _ids(padding, ctx=32)
    with torch.no_grad():
        want = loaded.model.get_text_features(input_ids=ids).pooler_output
        torch.testing.assert_close(graph(ids), want, rtol=0, atol=0)


def test_heads_graph_equals_full_model():
    # transformers heads semantics: the model's own forward, no geometry token (tests/test_heads_semantics.py)
    loaded = dataclasses.replace(tiny_model("litetext-s0"), heads_semantics="transformers")
    padding = get_padding("transformers")
    ids, mask = _ids(padding)
    pixels = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        levels = build_graph("vision_encoder", loaded, 16, padding)(pixels)
        text = build_graph("text_encoder", loaded, 16, padding)(ids, mask)
        got = build_graph("heads", loaded, 16, padding)(*levels, text, mask)
        want = loaded.model(pixel_values=pixels, input_ids=ids, attention_mask=mask)
    for g, w in zip(got, [want.pred_logits, want.pred_boxes, want.pred_masks, want.presence_logits]):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    assert [tuple(t.shape) for t in levels] == [(3, 32, 32, 32), (3, 32, 16, 16), (3, 32, 8, 8)]


def test_graph_specs_describe_real_shapes():
    loaded = tiny_model("litetext-s0")
    specs = describe_graphs(loaded, 16, get_padding("upstream"))
    assert specs["text_encoder"].input_names == ["input_ids"]  # upstream way: no mask input
    assert describe_graphs(loaded, 16, get_padding("transformers"))["text_encoder"].input_names == [
        "input_ids", "attention_mask"]
    assert specs["heads"].outputs[2].shape == ("batch", 12, 32, 32)
    assert specs["vision_encoder"].inputs[0].shape == ("batch", 3, 112, 112)


@pytest.mark.parametrize("name", list(PRESETS))
def test_full_size_text_parameters_match_the_paper(name):
    """Full-size presets (built on the meta device: no memory) have the paper's text parameter counts."""
    from transformers import CLIPTextModelWithProjection, Sam3LiteTextTextModel

    preset = PRESETS[name]
    config = build_config(preset, preset.default_context_length)
    with torch.device("meta"):
        if preset.family == "litetext":
            text = Sam3LiteTextTextModel(config.text_config)
        else:
            text = CLIPTextModelWithProjection(config.text_config)
    width = config.text_config.hidden_size
    params = sum(p.numel() for p in text.parameters()) + width * 256 + 256  # + projection to 256
    assert abs(params / 1e6 - preset.text_params_millions) < 0.06, params


def test_unknown_graph_and_padding_fail_clearly():
    loaded = tiny_model("litetext-s0")
    with pytest.raises(LitetextError, match="unknown graph"):
        build_graph("decoder", loaded, 16, get_padding("upstream"))
    with pytest.raises(LitetextError, match="unknown text padding"):
        get_padding("left")
