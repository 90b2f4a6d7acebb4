"""The CLI: a thin shell that exports, predicts, and turns user errors into one line and exit code 2."""

import json

import pytest
from click.testing import CliRunner

from conftest import builtin_image
from litetext.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_s0):
    folder = tmp_path_factory.mktemp("cli") / "ckpt"
    tiny_s0.model.save_pretrained(folder)
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_export_and_predict(checkpoint, tmp_path):
    out = tmp_path / "bundle"
    result = run("export", "--target", "onnx", "--checkpoint", checkpoint, "-o", out)
    assert result.exit_code == 0, result.output
    assert "text_encoder" in result.output and "min cosine" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["weights"]["format"] == "transformers"

    pred = tmp_path / "pred"
    result = run("predict", out, "--image", builtin_image(), "--prompt", "cat", "--threshold", "0", "-o", pred)
    assert result.exit_code == 0, result.output
    assert "12 instances" in result.output
    record = json.loads((pred / builtin_image().stem / "instances.json").read_text())  # one folder per image
    assert len(record["prompts"]["cat"]) == 12


def test_graphs_option_accepts_commas(checkpoint, tmp_path):
    result = run("export", "--checkpoint", checkpoint, "--graphs", "text_encoder,heads", "-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "b" / "manifest.json").read_text())["graphs"]) == {"text_encoder", "heads"}


@pytest.mark.parametrize("args, message", [
    (["--target", "tflite", "--model", "litetext-s0", "--random-init"], "unknown target 'tflite'"),
    (["--target", "coreml", "--precision", "w4", "--deployment-target", "iOS17", "--model", "litetext-s0",
      "--random-init"], "iOS18"),
    (["--checkpoint", "/nonexistent/ckpt"], "does not exist"),
    (["--model", "litetext-s0"], "--random-init"),
    (["--model", "litetext-s9", "--random-init"], "unknown model preset"),
])
def test_export_errors_are_one_line(tmp_path, args, message):
    result = run("export", *args, "-o", tmp_path / "b")
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "b").exists()


def test_predict_errors(checkpoint, tmp_path):
    out = tmp_path / "bundle"
    assert run("export", "--checkpoint", checkpoint, "-o", out).exit_code == 0
    for args, message in [
        (["--prompt", "   "], "empty"),
        (["--prompt", "cat", "--image", tmp_path / "missing.png"], "does not exist"),
    ]:
        base = {"--image": builtin_image(), "--prompt": "cat"}
        merged = dict(base, **dict(zip(args[::2], args[1::2])))
        flat = [x for kv in merged.items() for x in kv]
        result = run("predict", out, *flat, "-o", tmp_path / "p")
        assert result.exit_code == 2 and message in result.output, result.output
    result = run("predict", tmp_path, "--image", builtin_image(), "--prompt", "cat", "-o", tmp_path / "p")
    assert result.exit_code == 2 and "not a litetext bundle" in result.output
