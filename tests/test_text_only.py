"""Text-only loading: the text encoder alone, from random weights, a transformers folder or an upstream .pt,
gives exactly the full model's text features, without building the vision encoder."""

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_model, tiny_overrides
from litetext.errors import LitetextError
from litetext.models.graphs import TextEncoderGraph, get_padding
from litetext.models.loading import load_model

IDS = torch.tensor([[49406, 320, 2368, 49407] + [0] * 12, [49406, 1929, 49407] + [0] * 13])


def _features(loaded):
    graph = TextEncoderGraph(loaded, 16, get_padding("upstream")).eval()
    with torch.no_grad():
        return graph(IDS)


def _text_only(preset="litetext-s0", **kwargs):
    return load_model(preset, config_overrides=tiny_overrides(preset), graphs=["text_encoder"], **kwargs)


def _has_vision(loaded) -> bool:
    return any(name.startswith("vision_encoder") for name, _ in loaded.model.named_parameters())


@pytest.mark.parametrize("preset", ["litetext-s0", "sam3"])
def test_random_text_only_equals_the_full_models_text_encoder(preset):
    full = tiny_model(preset, seed=3)
    alone = _text_only(preset, random_init=True, seed=3)
    assert alone.text_only and not full.text_only
    assert _has_vision(full) and not _has_vision(alone)
    torch.testing.assert_close(_features(alone), _features(full), rtol=0, atol=0)
    assert not torch.equal(_features(alone), _features(_text_only(preset, random_init=True, seed=4)))


def test_text_only_from_a_transformers_folder(tmp_path, tiny_s0):
    tiny_s0.model.save_pretrained(tmp_path / "ckpt")
    alone = load_model(checkpoint=tmp_path / "ckpt", graphs=["text_encoder"])
    assert alone.text_only and not _has_vision(alone) and alone.weights["format"] == "transformers"
    torch.testing.assert_close(_features(alone), _features(tiny_s0), rtol=0, atol=0)


def test_text_only_from_an_upstream_file(tmp_path):
    from litetext.models.upstream import hf_to_upstream

    original = tiny_model("litetext-s0")
    torch.save({"model": hf_to_upstream(original.model.state_dict(), "litetext", text_positions=77)}, tmp_path / "u.pt")
    alone = _text_only(checkpoint=tmp_path / "u.pt")
    assert alone.text_only and not _has_vision(alone) and alone.weights["format"] == "upstream"
    torch.testing.assert_close(_features(alone), _features(original), rtol=0, atol=0)


def test_text_only_folder_missing_a_text_key_fails_naming_it(tmp_path, tiny_s0):
    from safetensors.torch import load_file, save_file

    tiny_s0.model.save_pretrained(tmp_path / "ckpt")
    state = load_file(tmp_path / "ckpt" / "model.safetensors")
    del state["text_projection.weight"]
    save_file(state, tmp_path / "ckpt" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LitetextError, match="text_projection.weight"):
        load_model(checkpoint=tmp_path / "ckpt", graphs=["text_encoder"])


def test_export_of_other_graphs_from_a_text_only_model_fails(tmp_path):
    from litetext.export.pipeline import export_bundle

    with pytest.raises(LitetextError, match="text encoder only"):
        export_bundle(_text_only(random_init=True), tmp_path / "b", graphs=["text_encoder", "heads"])


def test_text_only_export_matches_the_full_models(tmp_path):
    """A text_encoder bundle made from a text-only load passes parity against the FULL model's text encoder."""
    import numpy as np

    from litetext.bundle import Bundle
    from litetext.export.pipeline import export_bundle

    export_bundle(_text_only(random_init=True, seed=5), tmp_path / "b", graphs=["text_encoder"])
    out = Bundle.open(tmp_path / "b").runner("text_encoder").infer({"input_ids": IDS.numpy()})["text_features"]
    np.testing.assert_allclose(out, _features(tiny_model(seed=5)).numpy(), atol=1e-4, rtol=1e-4)


def test_a_typo_in_a_graph_name_fails_before_any_model_is_built(tmp_path, monkeypatch):
    from litetext import cli
    from litetext.models import loading

    def must_not_load(*args, **kwargs):
        raise AssertionError("load_model was called")

    monkeypatch.setattr(loading, "load_model", must_not_load)
    result = CliRunner().invoke(cli.main, ["export", "--model", "litetext-s0", "--random-init", "--graphs",
                                           "text_encodr", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert "unknown graphs ['text_encodr']" in result.output


def test_a_text_only_bench_loads_the_text_encoder_alone():
    from litetext.benchmarks import run_bench
    from litetext.benchmarks.stats import TimingOptions
    from litetext.benchmarks.targets import TorchTarget

    target = TorchTarget({"preset": "litetext-s0", "random_init": True, "seed": 0,
                          "config_overrides": tiny_overrides("litetext-s0")})
    records = run_bench([target], graphs=["text_encoder"], batches=[1], prompts=["a cat", "two red buses"],
                        timing=TimingOptions(min_runs=2, min_seconds=0.0, max_seconds=1.0), memory=False)
    assert [r["status"] for r in records] == ["ok"]
    assert target.loaded.text_only and not _has_vision(target.loaded)
