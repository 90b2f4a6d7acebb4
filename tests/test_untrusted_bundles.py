"""Bundles as untrusted input: a manifest or folder made to read files outside the bundle, to hang a reader, or
damaged by accident is refused by Bundle.open, `predict`, `bench` and `check` with one line and exit status 2,
before anything outside the bundle is opened."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time

import pytest

from conftest import builtin_image
from hostile import OpenRecorder, copy_bundle, manifest_of, one_line_error, run_cli, tiny_bundle
from litetext.bundle import Bundle
from litetext.errors import LitetextError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture()
def outside(tmp_path, bundle):
    """A folder beside the test's bundles holding a VALID graph and tokenizer: were a hostile manifest followed,
    the command would run on them and succeed."""
    folder = tmp_path / "outside"
    folder.mkdir()
    shutil.copyfile(bundle / "text_encoder.onnx", folder / "secret.onnx")
    shutil.copyfile(bundle / "tokenizer.json", folder / "tokenizer.json")
    return folder


def commands(case, out):
    """Every way a user opens a bundle: predict, bench, check (each as the CLI runs it)."""
    return {
        "predict": ["predict", case, "--image", builtin_image(), "--prompt", "cat", "-o", out / "pred"],
        "bench": ["bench", case, "--graphs", "text_encoder", "--no-memory", "--min-runs", "1", "--warmup", "0",
                  "--min-seconds", "0", "--reference", case],
        "check": ["check", case],
    }


def refused_everywhere(case, tmp_path, outside, monkeypatch, message):
    recorder = OpenRecorder(monkeypatch)
    for name, args in commands(case, tmp_path).items():
        line = one_line_error(run_cli(*args))
        assert message in line, (name, line)
    with pytest.raises(LitetextError, match=message):
        Bundle.open(case)
    assert recorder.under(outside) == [], recorder.under(outside)
    assert not (tmp_path / "pred").exists()


def with_graph_file(bundle, tmp_path, graph, name):
    manifest = manifest_of(bundle)
    manifest["graphs"][graph]["file"] = name
    return copy_bundle(bundle, tmp_path / "case", manifest)


@pytest.mark.parametrize("name", ["../outside/secret.onnx", "ABSOLUTE", "./../outside/secret.onnx",
                                  "sub/../../outside/secret.onnx"])
def test_graph_paths_out_of_the_bundle_are_refused(bundle, tmp_path, outside, monkeypatch, name):
    name = str(outside / "secret.onnx") if name == "ABSOLUTE" else name
    case = with_graph_file(bundle, tmp_path, "text_encoder", name)
    refused_everywhere(case, tmp_path, outside, monkeypatch, "is not a file name inside the bundle")


def test_a_symlink_out_of_the_bundle_is_refused(bundle, tmp_path, outside, monkeypatch):
    case = copy_bundle(bundle, tmp_path / "case")
    (case / "text_encoder.onnx").unlink()
    (case / "text_encoder.onnx").symlink_to(outside / "secret.onnx")
    refused_everywhere(case, tmp_path, outside, monkeypatch, "leads outside the bundle folder")


def test_a_symlinked_manifest_or_external_weights_out_of_the_bundle_are_refused(bundle, tmp_path, outside,
                                                                                monkeypatch):
    case = copy_bundle(bundle, tmp_path / "case")
    (case / "text_encoder.onnx.data").symlink_to(outside / "secret.onnx")  # not named by the manifest
    refused_everywhere(case, tmp_path, outside, monkeypatch, "leads outside the bundle folder")
    other = copy_bundle(bundle, tmp_path / "other")
    shutil.move(other / "manifest.json", outside / "manifest.json")
    (other / "manifest.json").symlink_to(outside / "manifest.json")
    with pytest.raises(LitetextError, match="leads outside the bundle folder"):
        Bundle.open(other)


@pytest.mark.parametrize("graph", ["text_encoder", "heads"])
def test_a_fifo_as_graph_file_fails_at_once(bundle, tmp_path, outside, monkeypatch, graph):
    case = copy_bundle(bundle, tmp_path / "case")
    (case / f"{graph}.onnx").unlink()
    os.mkfifo(case / f"{graph}.onnx")
    start = time.perf_counter()
    refused_everywhere(case, tmp_path, outside, monkeypatch, "is a FIFO")
    assert time.perf_counter() - start < 60


def test_a_fifo_anywhere_in_the_bundle_is_refused(bundle, tmp_path, outside, monkeypatch):
    case = copy_bundle(bundle, tmp_path / "case")
    os.mkfifo(case / "text_encoder.onnx.data")  # ONNX Runtime would read a graph's external weights from it
    refused_everywhere(case, tmp_path, outside, monkeypatch, "is a FIFO")


@pytest.mark.parametrize("key, name", [("features_file", "../outside/secret.onnx"),
                                       ("prompts_file", "ABSOLUTE")])
def test_fixed_vocabulary_files_out_of_the_bundle_are_refused(bundle, tmp_path, outside, monkeypatch, key, name):
    manifest = manifest_of(bundle)
    manifest["text_path"] = {"kind": "fixed_vocabulary", "features_file": "tokenizer.json",
                             "prompts_file": "tokenizer.json", "storage": "fp16"}
    manifest["text_path"][key] = str(outside / "secret.onnx") if name == "ABSOLUTE" else name
    manifest["text_path"]["sha256"] = {manifest["text_path"][k]: "0" * 64 for k in ("features_file", "prompts_file")}
    case = copy_bundle(bundle, tmp_path / "case", manifest)
    refused_everywhere(case, tmp_path, outside, monkeypatch, "is not a file name inside the bundle")


def test_pruned_table_files_need_their_sha256(bundle, tmp_path):
    manifest = manifest_of(bundle)
    manifest["text_path"] = {"kind": "pruned_text_encoder", "tokenizer_file": "tokenizer.json",
                             "pruned_tokens_file": "pruned_tokens.json", "sha256": {}}
    case = copy_bundle(bundle, tmp_path / "case", manifest)
    with pytest.raises(LitetextError, match="text_path.sha256 lacks tokenizer.json"):
        Bundle.open(case)


def test_a_tokenizer_out_of_the_bundle_is_refused(bundle, tmp_path, outside, monkeypatch):
    manifest = manifest_of(bundle)
    manifest["tokenizer"]["file"] = "../outside/tokenizer.json"
    case = copy_bundle(bundle, tmp_path / "case", manifest)
    refused_everywhere(case, tmp_path, outside, monkeypatch, "is not a file name inside the bundle")


def test_swapped_weights_fail_the_sha256_check(bundle, tmp_path, outside, monkeypatch):
    case = copy_bundle(bundle, tmp_path / "case")
    data = bytearray((bundle / "heads.onnx").read_bytes())
    data[-10] ^= 0xFF  # one weight changed: the graph still loads and runs
    (case / "heads.onnx").unlink()
    (case / "heads.onnx").write_bytes(bytes(data))
    line = one_line_error(run_cli("check", case))
    assert "heads.onnx does not match its sha256" in line
    line = one_line_error(run_cli(*commands(case, tmp_path)["predict"], "--verify"))
    assert "does not match its sha256" in line and not (tmp_path / "pred").exists()
    with pytest.raises(LitetextError, match="does not match its sha256"):
        Bundle.open(case, verify=True)
    Bundle.open(case)  # without verify the hashes are not read (fast opens)


@pytest.mark.parametrize("change, message", [
    (lambda t: t["model"]["vocab"].update({"cat</w>": 1}), "its vocabulary has"),
    (lambda t: t["model"].update(vocab={k: v + 1 for k, v in t["model"]["vocab"].items()}), "its vocabulary has"),
    (lambda t: t["padding"].update(pad_id=49407), "its padding"),
    (lambda t: t["truncation"].update(max_length=77), "its truncation"),
    (lambda t: t["post_processor"]["special_tokens"]["<start_of_text>"].update(ids=[1]), "special token ids"),
    (lambda t: t.clear(), "no model.vocab"),
])
def test_a_tokenizer_that_does_not_match_the_manifest_is_refused(bundle, tmp_path, change, message):
    case = copy_bundle(bundle, tmp_path / "case")
    tokenizer = json.loads((bundle / "tokenizer.json").read_text())
    change(tokenizer)
    (case / "tokenizer.json").unlink()
    (case / "tokenizer.json").write_text(json.dumps(tokenizer))
    for args in (["check", case, "--no-verify"], commands(case, tmp_path)["predict"]):
        assert message in one_line_error(run_cli(*args))


def test_a_garbage_tokenizer_is_refused(bundle, tmp_path):
    case = copy_bundle(bundle, tmp_path / "case")
    (case / "tokenizer.json").unlink()
    (case / "tokenizer.json").write_bytes(b"\xff\xfe garbage")
    assert "is not UTF-8 text" in one_line_error(run_cli("check", case, "--no-verify"))


@pytest.mark.parametrize("change, message", [
    (lambda m: m["graphs"]["heads"]["outputs"][0].update(name="logits"), "has outputs"),
    (lambda m: m["graphs"]["text_encoder"]["outputs"][0].update(dtype="float16"), "has outputs"),
    (lambda m: m["graphs"]["text_encoder"]["inputs"][0].update(dtype="int32"), "has inputs"),
])
def test_graph_inputs_and_outputs_must_match_the_manifest(bundle, tmp_path, change, message):
    manifest = manifest_of(bundle)
    change(manifest)
    case = copy_bundle(bundle, tmp_path / "case", manifest)
    for args in (["check", case], commands(case, tmp_path)["predict"]):
        assert message in one_line_error(run_cli(*args))


def test_a_damaged_graph_is_one_line(bundle, tmp_path):
    case = copy_bundle(bundle, tmp_path / "case")
    (case / "vision_encoder.onnx").unlink()
    (case / "vision_encoder.onnx").write_bytes(b"\x08\x07 not a protobuf \xff" * 10)
    assert "does not match its sha256" in one_line_error(run_cli("check", case))
    assert "is not a readable ONNX graph" in one_line_error(run_cli("check", case, "--no-verify"))
    assert "ONNX Runtime cannot open" in one_line_error(run_cli(*commands(case, tmp_path)["predict"]))


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "the top level must be an object"),
    ("\"a string\"", "the top level must be an object"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ("DELETE graphs", "graphs is missing"),
    ("DELETE tokenizer", "tokenizer is missing"),
    ("SET format_version 2", "has bundle format 2"),
    ("SET format_version \"1\"", "format_version must be an integer"),
    ("SET context_length 0", "context_length must be an integer >= 3"),
    ("SET graphs []", "graphs must be an object"),
    ("SET graphs {\"decoder\": null}", "graphs.decoder must be an object"),
    ("SET target 7", "target must be a string"),
    ("SET model {\"weights\": \"random\"}", "model.weights must be an object"),
    ("SET preprocess {\"image_size\": true}", "preprocess.image_size must be an integer >= 1"),
    ("SET text_path {\"kind\": \"python\"}", "text_path.kind must be one of"),
])
def test_damaged_manifests_are_one_line(bundle, tmp_path, text, message):
    if text.startswith(("DELETE", "SET")):
        manifest = manifest_of(bundle)
        op, key, *value = text.split(" ", 2)
        if op == "DELETE":
            del manifest[key]
        else:
            manifest[key] = json.loads(value[0])
        text = json.dumps(manifest)
    case = copy_bundle(bundle, tmp_path / "case", text)
    for args in commands(case, tmp_path).values():
        line = one_line_error(run_cli(*args))
        assert message in line, line


def test_a_huge_manifest_is_refused_unread(bundle, tmp_path, monkeypatch):
    case = copy_bundle(bundle, tmp_path / "case")
    with open(case / "manifest.json", "r+b") as f:
        f.truncate(17 << 20)  # sparse: nothing really written
    recorder = OpenRecorder(monkeypatch)
    assert "more than a bundle manifest can be" in one_line_error(run_cli("check", case))
    assert recorder.under(case / "manifest.json") == []


def test_the_untouched_bundle_passes_every_check(bundle, tmp_path):
    result = run_cli("check", bundle)
    assert result.exit_code == 0, result.output
    Bundle.open(bundle, verify=True)


# Fuzz ----------------------------------------------------------------------------------------------------------

def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


FILE_KEYS = ("file", "features_file", "prompts_file", "tokenizer_file", "pruned_tokens_file")


def _mutate(manifest, rng: random.Random, outside) -> dict:
    manifest = copy.deepcopy(manifest)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(manifest) if p]
        file_paths = [p for p in paths if p[-1] in FILE_KEYS]
        path = rng.choice(file_paths if file_paths and rng.random() < 0.4 else paths)
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        op = rng.choice(["delete", "type", "type", "outside"])
        values = [None, 0, -1, 1.5, True, "x", "", [], {}, [1, "a"], {"a": 1}, 2**70, "\0", "a" * 300]
        places = ["../outside/secret.onnx", str(outside / "secret.onnx"), "/etc/passwd", "..", ".", "sub/x.onnx",
                  "text_encoder.onnx/../../outside/secret.onnx", "/dev/zero", "manifest.json"]
        if op == "delete":
            if isinstance(parent, list):
                parent.pop(path[-1])
            else:
                del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(places if op == "outside" else values)
    if rng.random() < 0.2:  # a text path that names files
        kind = rng.choice(["fixed_vocabulary", "pruned_text_encoder"])
        keys = ("features_file", "prompts_file") if kind == "fixed_vocabulary" else ("tokenizer_file", "pruned_tokens_file")
        names = [rng.choice(["tokenizer.json", "../outside/secret.onnx", "/etc/passwd", "x.npz"]) for _ in keys]
        manifest["text_path"] = {"kind": kind, **dict(zip(keys, names)), "storage": "fp16",
                                 "sha256": {n: "0" * 64 for n in names}}
    return manifest


def test_fuzzed_manifests_never_trace_back_or_read_outside(bundle, tmp_path, outside, monkeypatch):
    """A few hundred seeded mutations (keys removed, types changed, paths pointed outside): each is opened as
    predict and bench open it (Bundle.open, a runner per graph, the tokenizer); only LitetextError may come out,
    and nothing under `outside` (a valid graph and tokenizer) is ever opened."""
    original = manifest_of(bundle)
    recorder = OpenRecorder(monkeypatch)
    outcomes = {"refused": 0, "opened": 0}
    start = time.perf_counter()
    for seed in range(300):
        rng = random.Random(seed)
        case = copy_bundle(bundle, tmp_path / f"case{seed}", json.dumps(_mutate(original, rng, outside)))
        try:
            opened = Bundle.open(case, verify=seed % 2 == 0)
            for graph in opened.graphs:
                opened.runner(graph).close()
            opened.tokenizer()
            outcomes["opened"] += 1
        except LitetextError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
        shutil.rmtree(case)
    assert recorder.under(outside) == []
    assert outcomes["refused"] > 250, outcomes
    assert time.perf_counter() - start < 120


# Checkpoints ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from conftest import tiny_model

    folder = tmp_path_factory.mktemp("ckpt") / "ckpt"
    tiny_model().model.save_pretrained(folder)
    return folder


def _copy_checkpoint(checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    return folder, json.loads((folder / "config.json").read_text())


def test_a_checkpoint_of_other_shapes_names_keys_and_shapes_in_one_line(checkpoint, tmp_path):
    folder, config = _copy_checkpoint(checkpoint, tmp_path)
    config["text_config"]["intermediate_size"] = 72
    (folder / "config.json").write_text(json.dumps(config))
    line = one_line_error(run_cli("export", "--checkpoint", folder, "--graphs", "text_encoder", "-o", tmp_path / "o"))
    assert "does not fit the model: 9 keys with other shapes" in line
    assert "text_encoder.layers.0.conv_feed_forward.mlp.fc1.bias: checkpoint (64,) vs model (72,)" in line
    assert not (tmp_path / "o").exists()


def test_a_config_holding_a_list_is_one_line(checkpoint, tmp_path):
    folder, _ = _copy_checkpoint(checkpoint, tmp_path)
    (folder / "config.json").write_text("[1, 2]")
    line = one_line_error(run_cli("export", "--checkpoint", folder, "-o", tmp_path / "o"))
    assert "holds a JSON list, not a transformers config object" in line


def test_a_pickle_that_could_run_code_is_refused_for_safety(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"detector.a": Payload()}, protocol=4))
    line = one_line_error(run_cli("export", "--model", "litetext-s0", "--checkpoint", path, "-o", tmp_path / "o"))
    assert "was refused for safety" in line and "truncated" not in line
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("kind, keys, message", [
    ("fixed_vocabulary", ("features_file", "prompts_file"), "is not a fixed vocabulary's features file"),
    ("pruned_text_encoder", ("tokenizer_file", "pruned_tokens_file"), "holds a damaged pruned tokenizer"),
])
def test_text_path_files_with_matching_hashes_but_wrong_content_are_one_line(bundle, tmp_path, kind, keys, message):
    """A bundle made to mislead can list the right sha256 for the wrong files."""
    from litetext.files import sha256_of

    manifest = manifest_of(bundle)
    manifest["text_path"] = {"kind": kind, **{k: "tokenizer.json" for k in keys}, "storage": "fp16",
                             "sha256": {"tokenizer.json": sha256_of(bundle / "tokenizer.json")}}
    if kind == "fixed_vocabulary":
        del manifest["graphs"]["text_encoder"]
    case = copy_bundle(bundle, tmp_path / "case", manifest)
    assert message in one_line_error(run_cli(*commands(case, tmp_path)["predict"]))
