"""Checkpoint loading: transformers folders load exactly; broken or mismatched ones fail with one clear line."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny_model
from litetext.errors import LitetextError
from litetext.models.loading import load_model


def _text_features(loaded):
    ids = torch.tensor([[49406, 320, 2368, 49407] + [0] * 12])
    with torch.no_grad():
        return loaded.model.get_text_features(input_ids=ids).pooler_output


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_s0):
    folder = tmp_path_factory.mktemp("ckpt") / "s0"
    tiny_s0.model.save_pretrained(folder)
    return folder


def test_transformers_folder_loads_exactly(saved, tiny_s0):
    loaded = load_model(checkpoint=saved)
    assert loaded.family == "litetext" and not loaded.is_random
    assert loaded.weights["format"] == "transformers" and len(loaded.weights["sha256"]) == 64
    torch.testing.assert_close(_text_features(loaded), _text_features(tiny_s0), rtol=0, atol=0)


def test_teacher_folder_loads(tmp_path, tiny_teacher):
    tiny_teacher.model.save_pretrained(tmp_path / "t")
    loaded = load_model(checkpoint=tmp_path / "t")
    assert loaded.family == "sam3"
    torch.testing.assert_close(_text_features(loaded), _text_features(tiny_teacher), rtol=0, atol=0)


def _copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "copy")


def test_truncated_weights_fail_in_one_line(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(LitetextError, match="cannot load checkpoint") as info:
        load_model(checkpoint=folder)
    assert "\n" not in str(info.value)


def test_missing_keys_fail_naming_them(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    state = load_file(folder / "model.safetensors")
    del state["text_projection.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LitetextError, match="missing keys.*text_projection.weight"):
        load_model(checkpoint=folder)


def test_mismatched_config_fails_naming_shapes(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LitetextError, match="cannot load checkpoint|other shapes"):
        load_model(checkpoint=folder)


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "without config.json"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("{not json")), "not valid JSON"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "bert"}')), "model_type 'bert'"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "sam3"}')), "no .safetensors"),
])
def test_bad_checkpoint_paths(tmp_path, setup, message):
    path = tmp_path / "ckpt"
    setup(path)
    with pytest.raises(LitetextError, match=message):
        load_model(checkpoint=path)


def test_weights_source_must_be_explicit(tmp_path):
    with pytest.raises(LitetextError, match="--random-init"):
        load_model("litetext-s0")
    with pytest.raises(LitetextError, match="needs --model"):
        load_model(random_init=True)
    with pytest.raises(LitetextError, match="unknown model preset"):
        load_model("litetext-xl", random_init=True)
    with pytest.raises(LitetextError, match="context lengths"):
        load_model("litetext-s0", random_init=True, context_length=77)
    upstream = tmp_path / "model.pt"
    upstream.write_bytes(b"x")
    with pytest.raises(LitetextError, match="add --model PRESET"):
        load_model(checkpoint=upstream)


def test_random_init_is_seeded_and_labelled():
    a, b, c = tiny_model(seed=1), tiny_model(seed=1), tiny_model(seed=2)
    assert torch.equal(_text_features(a), _text_features(b))
    assert not torch.equal(_text_features(a), _text_features(c))
    assert a.is_random and "RANDOM" in a.weights_label and "seed 1" in a.weights_label


@pytest.mark.parametrize("preset", ["litetext-s0", "sam3"])
def test_upstream_checkpoint_loads_exactly(tmp_path, preset):
    """An upstream {"model": state_dict} file with `detector.` keys (the student's table stored at 77 rows, as
    released files hold it) loads into the same model; the table is cut to the context, as upstream does."""
    from conftest import tiny_overrides
    from litetext.models.upstream import hf_to_upstream

    original = tiny_model(preset)
    positions = 77 if preset == "litetext-s0" else None
    upstream = hf_to_upstream(original.model.state_dict(), original.family, text_positions=positions)
    torch.save({"model": upstream}, tmp_path / "up.pt")
    loaded = load_model(preset, checkpoint=tmp_path / "up.pt", config_overrides=tiny_overrides(preset))
    assert loaded.weights["format"] == "upstream" and loaded.preset == preset
    torch.testing.assert_close(_text_features(loaded), _text_features(original), rtol=0, atol=0)


def test_upstream_checkpoint_of_another_preset_fails_naming_keys(tmp_path):
    from conftest import tiny_overrides
    from litetext.models.upstream import hf_to_upstream

    s0 = tiny_model("litetext-s0")
    torch.save({"model": hf_to_upstream(s0.model.state_dict(), "litetext")}, tmp_path / "s0.pt")
    with pytest.raises(LitetextError, match="right preset") as info:
        load_model("litetext-s1", checkpoint=tmp_path / "s0.pt", config_overrides=tiny_overrides("litetext-s1"))
    assert "\n" not in str(info.value)


def test_truncated_upstream_file_fails_in_one_line(tmp_path):
    s0 = tiny_model("litetext-s0")
    from litetext.models.upstream import hf_to_upstream

    torch.save({"model": hf_to_upstream(s0.model.state_dict(), "litetext")}, tmp_path / "s0.pt")
    data = (tmp_path / "s0.pt").read_bytes()
    (tmp_path / "s0.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(LitetextError, match="truncated") as info:
        load_model("litetext-s0", checkpoint=tmp_path / "s0.pt")
    assert "\n" not in str(info.value)
