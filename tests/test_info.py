"""`litetext info BUNDLE`: the manifest as a person reads it."""

import json

from click.testing import CliRunner

from litetext.cli import main


def test_info_prints_graphs_sizes_weights_parity_and_what_was_checked(tmp_path, tiny_s0):
    from litetext.export.pipeline import export_bundle

    manifest = export_bundle(tiny_s0, tmp_path / "b", graphs=["text_encoder"], precision="int8")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    text = result.output
    graph = manifest["graphs"]["text_encoder"]
    fig = graph["parity"]["outputs"]["text_features"]
    assert "for onnx, int8, context 16, upstream padding" in text
    assert f"text_encoder: text_encoder.onnx, {graph['bytes'] / 2**20:.1f} MiB" in text
    assert "takes   input_ids int64 [batch, 16]" in text and "returns text_features float32 [batch, 16, 32]" in text
    assert "weights: RANDOM weights (seed 0, stress init)" in text and "NOTE: random weights" in text
    assert f"cosine mean {fig['cosine_mean']:.7f}, worst 1% {fig['cosine_worst_1pct']:.7f}" in text
    assert "=> checked: the artifact itself ran" in text
    assert "gate: min_cosine_mean 0.995, min_cosine_worst_1pct 0.98" in text
    assert f"calibrated: minmax on {graph['calibration']['calibration_prompts']} prompts" in text


def test_info_says_when_parity_was_only_simulated(tmp_path):
    from litetext.info_cli import describe_bundle

    manifest = {
        "target": "coreml", "precision": "w8", "context_length": 16, "created": "now", "export_seconds": 1,
        "text_padding": {"name": "upstream", "pad_id": 0, "attention_masked": False},
        "model": {"preset": "litetext-s0", "family": "litetext", "weights": {"kind": "checkpoint"},
                  "weights_label": "checkpoint c (sha256 abc)"},
        "graphs": {"text_encoder": {
            "file": "text_encoder.mlpackage", "bytes": 2**20, "inputs": [{"name": "input_ids", "dtype": "int32",
                                                                          "shape": ["batch", 16]}],
            "outputs": [{"name": "text_features", "dtype": "float32", "shape": ["batch", 16, 256]}],
            "parity": {"reference": "torch", "outputs": {"text_features": {
                "cosine_mean": 0.9995, "cosine_worst_1pct": 0.998, "cosine_min": 0.99, "max_abs_error": 0.1,
                "max_abs_reference": 1.0}}},
            "coreml": {"parity_runtime": "simulated in PyTorch: ..."}}},
    }
    text = "\n".join(describe_bundle(manifest, "b"))
    assert "=> only simulated: the artifact itself did not run" in text and "input_ids int32 [batch, 16]" in text
    json.dumps(manifest)
