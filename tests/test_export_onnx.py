"""ONNX export: bundles that check themselves, dynamic batch, fp16, and failures that leave nothing behind."""

import errno
import json

import numpy as np
import onnx
import pytest


from litetext.errors import LitetextError
from litetext.export import export_bundle
from litetext.bundle import Bundle
from litetext.models.graphs import build_graph, describe_graphs
from litetext.runtimes.torch_runner import TorchRunner
from litetext.tokenizer import ClipTokenizer


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_s0):
    out = tmp_path_factory.mktemp("bundles") / "s0"
    export_bundle(tiny_s0, out)
    return Bundle.open(out)


def test_bundle_holds_checked_graphs_tokenizer_and_manifest(bundle):
    m = bundle.manifest
    assert set(m["graphs"]) == {"text_encoder", "vision_encoder", "heads"}
    assert m["target"] == "onnx" and m["precision"] == "fp32" and m["context_length"] == 16
    assert m["text_padding"] == {"name": "upstream", "pad_id": 0, "attention_masked": False}
    assert m["model"]["weights"] == {"kind": "random", "seed": 0, "init": "stress"}
    assert m["model"]["weights_label"] == "RANDOM weights (seed 0, stress init), not a trained model"
    for name, graph in m["graphs"].items():
        model = onnx.load(bundle.path / graph["file"])
        assert [i.name for i in model.graph.input] == [t["name"] for t in graph["inputs"]]
        assert [o.name for o in model.graph.output] == [t["name"] for t in graph["outputs"]]
        for out_name, fig in graph["parity"]["outputs"].items():
            assert fig["cosine_min"] > 0.9999 and fig["count"] > 0, (name, out_name, fig)
    assert m["graphs"]["text_encoder"]["parity"]["outputs"]["text_features"]["max_abs_error"] < 1e-4
    assert m["graphs"]["text_encoder"]["parity"]["outputs"]["text_features"]["count"] > 80  # 80 COCO names, valid tokens
    assert set(m["tools"]) >= {"torch", "transformers", "onnx", "onnxruntime"}
    assert not list(bundle.path.parent.glob(".s0.partial-*"))


@pytest.mark.parametrize("batch", [1, 3])
def test_every_graph_matches_torch_at_batch(bundle, tiny_s0, batch):
    rng = np.random.default_rng(batch)
    padding = bundle.text_padding
    specs = describe_graphs(tiny_s0, 16, padding)
    tokens = ClipTokenizer()(["cat", "a red double decker bus", "dog on a skateboard"][:batch], 16, padding.pad_id)
    feeds = {
        "text_encoder": {"input_ids": tokens.input_ids},
        "vision_encoder": {"pixel_values": rng.standard_normal((batch, 3, 112, 112), dtype=np.float32)},
        "heads": {**{f"fpn_{i}": rng.standard_normal((batch, 32, s, s), dtype=np.float32)
                     for i, s in enumerate([32, 16, 8])},
                  "text_features": rng.standard_normal((batch, 16, 32), dtype=np.float32),
                  "attention_mask": tokens.attention_mask},
    }
    for name, feed in feeds.items():
        want = TorchRunner(build_graph(name, tiny_s0, 16, padding), specs[name]).infer(feed)
        got = bundle.runner(name).infer(feed)
        for key in want:
            # fp32 rounding grows with the values summed: the absolute bound scales with the output's magnitude
            # (stress weights give masks up to ~20; transformers' gave 0.003, where this is the old 2e-5).
            atol = 2e-5 * max(1.0, float(np.abs(want[key]).max()))
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=atol, err_msg=f"{name}.{key}")


def test_bundle_tokenizer_json_gives_the_graph_ids(bundle):
    from tokenizers import Tokenizer

    prompts = ["person", "traffic light", "a man’s umbrella &amp; hat", "x " * 40]
    ours = ClipTokenizer()(prompts, 16, bundle.text_padding.pad_id)
    theirs = Tokenizer.from_file(str(bundle.path / "tokenizer.json")).encode_batch(prompts)
    assert np.array_equal(np.array([e.ids for e in theirs]), ours.input_ids)


def test_fp16_and_transformers_padding(tmp_path, tiny_s0):
    m = export_bundle(tiny_s0, tmp_path / "fp16", graphs=["text_encoder", "vision_encoder"], precision="fp16",
                      text_padding="transformers")
    graph = m["graphs"]["text_encoder"]
    assert [t["name"] for t in graph["inputs"]] == ["input_ids", "attention_mask"]
    fig = graph["parity"]["outputs"]["text_features"]
    assert 1e-6 < fig["max_abs_error"] and fig["cosine_min"] > 0.999  # really fp16, still faithful
    model = onnx.load(tmp_path / "fp16" / "text_encoder.onnx")
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_teacher_exports(tmp_path, tiny_teacher):
    m = export_bundle(tiny_teacher, tmp_path / "t", graphs=["text_encoder"], context_length=32)
    assert m["context_length"] == 32 and m["model"]["family"] == "sam3"
    assert m["graphs"]["text_encoder"]["parity"]["outputs"]["text_features"]["max_abs_error"] < 1e-4


def test_existing_out_needs_force(tmp_path, tiny_s0):
    out = tmp_path / "b"
    export_bundle(tiny_s0, out, graphs=["text_encoder"])
    first = json.loads((out / "manifest.json").read_text())["created"]
    with pytest.raises(LitetextError, match="--force"):
        export_bundle(tiny_s0, out, graphs=["text_encoder"])
    export_bundle(tiny_s0, out, graphs=["text_encoder"], force=True)
    assert (out / "manifest.json").is_file() and first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_force_never_deletes_a_foreign_folder(tmp_path, tiny_s0):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(LitetextError, match="not a litetext bundle"):
        export_bundle(tiny_s0, out, graphs=["text_encoder"], force=True)
    assert (out / "thesis.tex").read_text() == "precious"


def _fail_on_second_graph(monkeypatch, error):
    import litetext.export.onnx as target

    real, calls = target.export_graph, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, "export_graph", flaky)


@pytest.mark.parametrize("error, expected", [
    (KeyboardInterrupt(), KeyboardInterrupt),
    (OSError(errno.ENOSPC, "No space left on device"), LitetextError),
])
def test_interrupted_or_full_disk_export_leaves_nothing(tmp_path, tiny_s0, monkeypatch, error, expected):
    _fail_on_second_graph(monkeypatch, error)
    with pytest.raises(expected) as info:
        export_bundle(tiny_s0, tmp_path / "b", graphs=["text_encoder", "vision_encoder"])
    if expected is LitetextError:
        assert "no space left" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_fails_the_export_with_figures(tmp_path, tiny_s0, monkeypatch):
    import litetext.export.onnx as target

    real = target.export_graph

    def corrupt(module, spec, example, path, precision, calibration=None):
        real(module, spec, example, path, precision)
        model = onnx.load(path)  # scale the biggest weight: the graph still runs, but answers differently
        biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
        values = onnx.numpy_helper.to_array(biggest) * 1.5
        biggest.CopyFrom(onnx.numpy_helper.from_array(values, biggest.name))
        onnx.save(model, path)
        return path

    monkeypatch.setattr(target, "export_graph", corrupt)
    with pytest.raises(LitetextError, match="outside its tolerance.*max error"):
        export_bundle(tiny_s0, tmp_path / "b", graphs=["text_encoder"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target, message", [("tflite", "unknown target")])
def test_unavailable_targets_fail_clearly(tmp_path, tiny_s0, target, message):
    with pytest.raises(LitetextError, match=message):
        export_bundle(tiny_s0, tmp_path / "b", target=target)


def test_bad_options_fail_before_work(tmp_path, tiny_s0):
    with pytest.raises(LitetextError, match="w4 is available for text_encoder, vision_encoder only.*not heads"):
        export_bundle(tiny_s0, tmp_path / "b", target="coreml", precision="w4")
    with pytest.raises(LitetextError, match="not 'int4'"):
        export_bundle(tiny_s0, tmp_path / "b", precision="int4")
    with pytest.raises(LitetextError, match="unknown graphs"):
        export_bundle(tiny_s0, tmp_path / "b", graphs=["decoder"])
    assert list(tmp_path.iterdir()) == []


def test_bundle_open_rejects_incomplete_bundles(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy)
    (copy / "heads.onnx").unlink()
    with pytest.raises(LitetextError, match="incomplete"):
        Bundle.open(copy)
    with pytest.raises(LitetextError, match="not a litetext bundle"):
        Bundle.open(tmp_path)


def test_partial_folders_of_killed_exports_are_removed(tmp_path, tiny_s0):
    """A SIGKILLed export (out of memory) leaves its hidden partial folder; the next export to OUT removes it,
    but never the partial folder of an export still running."""
    import os
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f".b.partial-{dead.pid}-x1"
    alive = tmp_path / f".b.partial-{os.getpid()}-x2"
    for folder in (orphan, alive):
        folder.mkdir()
        (folder / "text_encoder.onnx").write_bytes(b"half")
    export_bundle(tiny_s0, tmp_path / "b", graphs=["text_encoder"])
    assert not orphan.exists() and alive.exists()


def test_bundle_files_are_readable_by_others(bundle):
    # Files written through a private temporary file (manifest, tokenizer) get the usual 0644, as the graphs do,
    # and the folder, made as a private temporary one, 0755.
    assert bundle.path.stat().st_mode & 0o777 == 0o755
    for path in bundle.path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name
