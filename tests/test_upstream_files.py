"""Every upstream file layout loads with --model alone (litetext.models.upstream_files): full detector files with
or without `meta`, 77-row or context-row position tables, and stage-1 text-only files; the context length comes
from the file, and a --context-length that contradicts it is one clear error."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model, tiny_overrides
from litetext.errors import LitetextError
from litetext.models.graphs import build_graph, get_padding
from litetext.models.heads_semantics import heads_semantics_of
from litetext.models.loading import load_model
from litetext.models.upstream import hf_to_upstream
from litetext.models.upstream_files import TEXT_PREFIX

PRESET = "litetext-s0"


def _features(loaded, ctx: int) -> torch.Tensor:
    ids = torch.zeros(2, ctx, dtype=torch.long)
    ids[0, :4] = torch.tensor([49406, 320, 2368, 49407])
    ids[1, :3] = torch.tensor([49406, 1929, 49407])
    with torch.no_grad():
        return build_graph("text_encoder", loaded, ctx, get_padding("upstream"))(ids)


def _save(path, state, meta=None):
    payload = {"model": state}
    if meta is not None:
        payload["meta"] = meta
    torch.save(payload, path)
    return path


def _load(path, context_length=None):
    return load_model(PRESET, checkpoint=path, context_length=context_length, config_overrides=tiny_overrides(PRESET))


def _detector_state(original, rows):
    return hf_to_upstream(original.model.state_dict(), "litetext", text_positions=rows)


@pytest.mark.parametrize("prefix", ["", "module.", "backbone.language_backbone.", TEXT_PREFIX])
def test_text_only_stage1_files_load_for_the_text_encoder(tmp_path, prefix):
    original = tiny_model(PRESET, seed=2)
    full = _detector_state(original, rows=77)
    # TextStudentEncoder's own keys (encoder.*, projector.*), as stage-1 training saves them
    student = {prefix + k[len(TEXT_PREFIX):]: v for k, v in full.items() if k.startswith(TEXT_PREFIX)}
    assert any(k.endswith("projector.weight") for k in student) and len(student) < len(full) / 2
    loaded = _load(_save(tmp_path / "stage1.pt", student))
    assert loaded.weights["contents"] == "text_encoder" and loaded.weights["format"] == "upstream"
    torch.testing.assert_close(_features(loaded, 16), _features(original, 16), rtol=0, atol=0)
    with pytest.raises(LitetextError, match="holds the text encoder only.*--graphs text_encoder") as info:
        build_graph("heads", loaded, 16, get_padding("upstream"))
    assert "\n" not in str(info.value)


def test_text_only_file_exports_the_text_encoder_by_default(tmp_path):
    from litetext.export import export_bundle

    original = tiny_model(PRESET, seed=2)
    student = {k[len(TEXT_PREFIX):]: v for k, v in _detector_state(original, 77).items() if k.startswith(TEXT_PREFIX)}
    loaded = _load(_save(tmp_path / "stage1.pt", student))
    manifest = export_bundle(loaded, tmp_path / "out", parity_prompts=["a cat", "a red car"])
    assert list(manifest["graphs"]) == ["text_encoder"]
    assert manifest["model"]["weights"]["contents"] == "text_encoder"
    with pytest.raises(LitetextError, match="cannot make the vision_encoder graph"):
        export_bundle(loaded, tmp_path / "out2", graphs=["vision_encoder"])


def test_text_only_file_with_missing_text_keys_or_the_teacher_fails(tmp_path):
    original = tiny_model(PRESET, seed=2)
    student = {k[len(TEXT_PREFIX):]: v for k, v in _detector_state(original, 77).items() if k.startswith(TEXT_PREFIX)}
    del student["projector.weight"]
    with pytest.raises(LitetextError, match="missing keys.*text_projection.weight"):
        _load(_save(tmp_path / "partial.pt", student))
    with pytest.raises(LitetextError, match="text encoder only; load it with --model litetext-s0"):
        load_model("sam3", checkpoint=_save(tmp_path / "s.pt", {"encoder.embedding_layer.weight": torch.zeros(2)}),
                   config_overrides=tiny_overrides("sam3"))


def test_meta_says_the_context_length(tmp_path):
    original = tiny_model(PRESET, seed=3, context_length=32)
    path = _save(tmp_path / "ctx32.pt", _detector_state(original, 77),
                 meta={"text_context_length": 32, "text_pos_embed_table_size": 77})
    loaded = _load(path)  # no --context-length
    assert loaded.model.config.text_config.max_position_embeddings == 32
    assert loaded.weights["meta"] == {"text_context_length": 32, "text_pos_embed_table_size": 77}
    torch.testing.assert_close(_features(loaded, 32), _features(original, 32), rtol=0, atol=0)
    assert heads_semantics_of(loaded).name == "upstream"  # an upstream .pt: upstream's heads
    assert _load(path, context_length=32).model.config.text_config.max_position_embeddings == 32
    with pytest.raises(LitetextError) as info:
        _load(path, context_length=16)
    assert str(info.value) == (f"{path} is made for context length 32 (its meta text_context_length is 32), not "
                               "--context-length 16: drop --context-length or pass 32")


def test_a_table_of_context_rows_says_the_context_length(tmp_path):
    original = tiny_model(PRESET, seed=3, context_length=32)
    path = _save(tmp_path / "ctx32_rows.pt", _detector_state(original, rows=None))  # 32 rows, no meta
    loaded = _load(path)
    assert loaded.model.config.text_config.max_position_embeddings == 32
    torch.testing.assert_close(_features(loaded, 32), _features(original, 32), rtol=0, atol=0)
    with pytest.raises(LitetextError, match="made for context length 32 \\(its text position table holds 32 rows\\)"):
        _load(path, context_length=16)


@pytest.mark.parametrize("meta", [None, {"text_context_length": None, "text_pos_embed_table_size": None},
                                  {"epoch": 3, "source": "trainer.pt"}])
def test_a_77_row_table_without_context_in_meta_takes_the_default_or_the_flag(tmp_path, meta):
    original = tiny_model(PRESET, seed=3, context_length=32)
    path = _save(tmp_path / "ctx.pt", _detector_state(original, 77), meta=meta)
    assert _load(path).model.config.text_config.max_position_embeddings == 16  # the preset's default
    loaded = _load(path, context_length=32)
    torch.testing.assert_close(_features(loaded, 32), _features(original, 32), rtol=0, atol=0)


def test_meta_that_contradicts_the_table_fails(tmp_path):
    original = tiny_model(PRESET, seed=3)
    path = _save(tmp_path / "bad.pt", _detector_state(original, 77), meta={"text_pos_embed_table_size": 32})
    with pytest.raises(LitetextError, match="meta says a text position table of 32 rows, its table holds 77"):
        _load(path)


def test_transformers_folders_default_to_transformers_heads(tmp_path):
    original = tiny_model(PRESET, seed=3)
    original.model.save_pretrained(tmp_path / "folder")
    loaded = load_model(checkpoint=tmp_path / "folder")
    assert heads_semantics_of(loaded).name == "transformers"
