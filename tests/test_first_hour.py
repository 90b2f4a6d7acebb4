"""What a new user meets in the first hour: `check` on every target, manifests that state what the artifact
takes, help texts from the code's tables, and errors that all start "error:"."""

import json

import pytest
from click.testing import CliRunner

from litetext.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def coreml_bundle(tmp_path_factory, tiny_s0):
    pytest.importorskip("coremltools")
    from litetext.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("coreml") / "b"
    export_bundle(tiny_s0, out, target="coreml", graphs=["text_encoder"], precision="fp16",
                  text_padding="transformers")
    return out


@pytest.fixture(scope="module")
def onnx_int8_bundle(tmp_path_factory, tiny_s0):
    from litetext.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("int8") / "b"
    export_bundle(tiny_s0, out, target="onnx", graphs=["text_encoder"], precision="int8")
    return out


def test_check_on_a_coreml_bundle_says_what_it_checks(coreml_bundle):
    result = run("check", coreml_bundle)
    assert result.exit_code == 0, result.output
    assert "missing" not in result.output
    assert "manifest and 1 graphs checked (files match their sha256)" in result.output
    assert "is a coreml bundle" in result.output and "--target tensorrt" in result.output


def test_check_finds_a_changed_package(coreml_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(coreml_bundle, tmp_path / "copy")
    weights = next((copy / "text_encoder.mlpackage").rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = run("check", copy)
    assert result.exit_code == 2 and "sha256" in result.output and "text_encoder.mlpackage" in result.output


def test_coreml_manifest_states_the_int32_inputs_the_package_takes(coreml_bundle):
    from litetext.bundle import Bundle

    graph = json.loads((coreml_bundle / "manifest.json").read_text())["graphs"]["text_encoder"]
    assert [(t["name"], t["dtype"]) for t in graph["inputs"]] == [("input_ids", "int32"), ("attention_mask", "int32")]
    assert all(t["runner_dtype"] == "int64" for t in graph["inputs"])
    # litetext's runners keep one contract (int64 ids, cast for Core ML)
    assert [t.dtype for t in Bundle.open(coreml_bundle).spec("text_encoder").inputs] == ["int64", "int64"]


def test_onnx_manifest_inputs_are_what_the_onnx_graph_takes(onnx_int8_bundle):
    import onnx

    graph = json.loads((onnx_int8_bundle / "manifest.json").read_text())["graphs"]["text_encoder"]
    model = onnx.load(onnx_int8_bundle / "text_encoder.onnx", load_external_data=False)
    declared = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in model.graph.input}
    assert {t["name"]: t["dtype"] for t in graph["inputs"]} == declared


def test_check_on_an_onnx_int8_bundle_says_it_was_made_for_onnx_runtime(onnx_int8_bundle):
    result = run("check", onnx_int8_bundle)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert "was made for ONNX Runtime" in lines[1]
    assert "litetext export --target tensorrt --precision int8" in lines[-1]


def _help_text(*command):
    return " ".join(run(*command, "--help").output.split())  # click wraps lines


def test_precision_help_is_the_targets_table():
    from litetext.cli_format import precision_graphs

    text = _help_text("export")
    table = precision_graphs()
    assert table["onnx"]["int8"] == ["text_encoder", "vision_encoder", "heads"]
    assert "fp32" in table["coreml"]
    for target, precisions in table.items():
        assert f"{target}: " + ", ".join(precisions).split(",")[0] in text
        for precision in precisions:
            assert precision in text
    assert "onnx: fp32, fp16, int8;" in text and "coreml: fp32, fp16, w8, w4 (text_encoder, vision_encoder only)" in text
    assert ("(vision_encoder, heads) at a calibrated precision (onnx int8, tensorrt int8, coreml w4, coreml w8a8, "
            "litert int8)") in text


def test_usage_errors_start_with_error_and_say_lists_take_commas(tmp_path):
    result = run("export", "--model", "litetext-s0", "--random-init", "--graphs", "text_encoder", "heads",
                 "-o", tmp_path / "b")
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: Got unexpected extra argument (heads)") and "comma-separated" in last
    assert "Error" not in result.output
    missing = run("export", "--model", "litetext-s0")
    assert missing.exit_code == 2 and missing.output.strip().splitlines()[-1].startswith("error: Missing option")


def test_predicts_hint_is_an_export_that_works(tmp_path, tiny_s0):
    from conftest import builtin_image

    tiny_s0.model.save_pretrained(tmp_path / "ckpt")
    assert run("export", "--checkpoint", tmp_path / "ckpt", "--graphs", "text_encoder", "-o", tmp_path / "t").exit_code == 0
    result = run("predict", tmp_path / "t", "--image", builtin_image(), "--prompt", "cat", "-o", tmp_path / "p")
    assert result.exit_code == 2 and result.output.startswith("error: ")
    hint = result.output.split("litetext export ", 1)[1].split()
    graphs = hint[hint.index("--graphs") + 1]
    again = run("export", "--checkpoint", tmp_path / "ckpt", "--graphs", graphs, "-o", tmp_path / "full")
    assert again.exit_code == 0, again.output
    assert run("predict", tmp_path / "full", "--image", builtin_image(), "--prompt", "cat", "-o",
               tmp_path / "p").exit_code == 0


def test_export_output_is_quiet_and_int8_shows_what_gates_it(tmp_path, tiny_s0, capfd):
    tiny_s0.model.save_pretrained(tmp_path / "ckpt")
    capfd.readouterr()
    result = run("export", "--checkpoint", tmp_path / "ckpt", "--graphs", "text_encoder", "--precision", "int8",
                 "-o", tmp_path / "int8")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("text_encoder "))
    assert "cosine mean 0.9" in line and "(gate 0.995)" in line and "worst 1% 0.9" in line and "(gate 0.98)" in line
    pytest.importorskip("coremltools")
    capfd.readouterr()
    result = run("export", "--target", "coreml", "--checkpoint", tmp_path / "ckpt", "--graphs", "text_encoder",
                 "--precision", "fp16", "-o", tmp_path / "coreml")
    assert result.exit_code == 0, result.output
    printed = result.output + "".join(capfd.readouterr())
    assert "\r" not in printed and "\x1b" not in printed and "loss_type" not in printed and "it/s" not in printed


def test_a_truncated_prompt_is_one_warning_line(tmp_path, tiny_s0):
    from conftest import builtin_image

    tiny_s0.model.save_pretrained(tmp_path / "ckpt")
    assert run("export", "--checkpoint", tmp_path / "ckpt", "-o", tmp_path / "full").exit_code == 0
    long = " ".join(["a striped cat"] * 10)
    result = run("predict", tmp_path / "full", "--image", builtin_image(), "--prompt", long, "-o", tmp_path / "p")
    assert result.exit_code == 0, result.output
    warned = [x for x in result.output.splitlines() if "longer than" in x]
    assert warned == [warned[0]] and warned[0].startswith("warning: 1 of 1 prompts are longer than context_length=16")
    assert "TruncationWarning" not in result.output and ".py:" not in result.output


def test_litetext_alone_prints_the_help():
    result = run()
    assert result.output.startswith("Usage:") and "error" not in result.output and "Commands:" in result.output


def test_litetext_predict_is_callable_after_its_module_was_imported():
    import litetext
    import litetext.predict  # noqa: F401  (what the CLI and the tests do first)

    assert callable(litetext.predict) and litetext.predict.predict is not None
