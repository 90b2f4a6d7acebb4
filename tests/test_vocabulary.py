"""Fixed-vocabulary text path and pruned token table (litetext.vocabulary)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import builtin_image
from litetext.errors import LitetextError
from litetext.models.graphs import build_graph, get_padding
from litetext.vocabulary.build import build_fixed_vocabulary, fixed_vocabulary_size_bytes, prune_vocabulary
from litetext.vocabulary.stored import FEATURES_FILE, PROMPTS_FILE, FixedVocabulary

CTX = 16
PROMPTS = ["person", "a red car", "dog", "traffic light", "the man on the left holding an umbrella"]
# Stored fp16 features fed to the heads, against fp32 features through the text encoder (tiny S0, seed 0,
# transformers' initialisation): on the 80 COCO names, measured max error 5.5e-6 (fp16) and 1.4e-4 (int8), on
# pred_logits; bound with margin. These bounds hold for those weights only, so the tests that use them pin
# that initialisation: stress weights (features up to ~13, where fp16 keeps ~0.006) give 5.1e-3 (fp16) and
# 0.32 (int8) on pred_logits for "person".
FP16_HEADS_ATOL = 1e-4
INT8_HEADS_ATOL = 2e-3


@pytest.fixture(scope="module")
def padding():
    return get_padding("upstream")


@pytest.fixture(scope="module")
def transformers_s0():
    """Tiny S0 with transformers' initialisation: the weights the bounds above were measured on."""
    from conftest import tiny_model

    return tiny_model("litetext-s0", init="transformers")


@pytest.fixture(scope="module")
def heads_inputs(transformers_s0):
    tiny_s0 = transformers_s0
    from litetext.calibration.data import builtin_asset, load_rgb, preprocess_image
    from litetext.models.graphs import model_geometry

    pixels = preprocess_image(load_rgb(builtin_asset("chelsea.png")), model_geometry(tiny_s0).image_size)
    with torch.inference_mode():
        levels = build_graph("vision_encoder", tiny_s0, CTX, get_padding("upstream"))(torch.from_numpy(pixels))
    return levels, build_graph("heads", tiny_s0, CTX, get_padding("upstream"))


def _heads(heads_inputs, features, mask):
    levels, heads = heads_inputs
    with torch.inference_mode():
        out = heads(*levels, torch.from_numpy(features), torch.from_numpy(mask))
    return [o.float().numpy() for o in out]


@pytest.mark.parametrize("precision,atol", [("fp16", FP16_HEADS_ATOL), ("int8", INT8_HEADS_ATOL)])
def test_heads_fed_with_stored_features_match_text_encoder(transformers_s0, padding, heads_inputs, precision, atol):
    from litetext.tokenizer import ClipTokenizer

    tiny_s0 = transformers_s0  # the bounds' weights (see FP16_HEADS_ATOL)
    vocab = build_fixed_vocabulary(tiny_s0, PROMPTS, CTX, padding, precision=precision)
    text = build_graph("text_encoder", tiny_s0, CTX, padding)
    for prompt in PROMPTS:
        tokens = ClipTokenizer()([prompt], context_length=CTX, pad_id=padding.pad_id)
        with torch.inference_mode():
            want_features = text(torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)).numpy()
        features, mask = vocab.lookup(prompt)
        assert features.dtype == np.float32 and features.shape == want_features.shape
        assert mask.dtype == np.int64 and (mask == tokens.attention_mask).all()
        want = _heads(heads_inputs, want_features, tokens.attention_mask)
        got = _heads(heads_inputs, features, mask)
        for w, g in zip(want, got):
            assert np.abs(w - g).max() <= atol, (prompt, np.abs(w - g).max())
    assert vocab.info["storage_error"]["max_abs_error"] < (1e-2 if precision == "fp16" else 5e-2)


def test_lookup_normalizes_and_unknown_prompt_names_the_list(tiny_s0, padding, tmp_path):
    vocab = build_fixed_vocabulary(tiny_s0, ["person", "Person ", "traffic light"], CTX, padding)
    assert len(vocab) == 2  # "Person " is "person" after cleaning
    a, _ = vocab.lookup("person")
    b, _ = vocab.lookup("  PERSON\t")
    assert (a == b).all()
    vocab.save(tmp_path)
    loaded = FixedVocabulary.load(tmp_path)
    with pytest.raises(LitetextError, match=r"vocabulary\.txt.*closest: 'person'"):
        loaded.lookup("persons")
    with pytest.raises(LitetextError, match="not in this bundle's fixed vocabulary"):
        loaded.lookup("zebra crossing at night")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_save_load_round_trip_and_hash(tiny_s0, padding, tmp_path, precision):
    vocab = build_fixed_vocabulary(tiny_s0, PROMPTS, CTX, padding, precision=precision)
    entry = vocab.save(tmp_path)
    assert entry["kind"] == "fixed_vocabulary" and entry["prompts"] == len(PROMPTS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    back = FixedVocabulary.load(tmp_path, entry)
    assert back.prompts == vocab.prompts and back.precision == precision
    for p in PROMPTS:
        assert all((x == y).all() for x, y in zip(back.lookup(p), vocab.lookup(p)))
    assert (tmp_path / PROMPTS_FILE).read_text().splitlines() == [p.lower() for p in PROMPTS]
    data = bytearray((tmp_path / FEATURES_FILE).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / FEATURES_FILE).write_bytes(bytes(data))
    with pytest.raises(LitetextError, match="sha256"):
        FixedVocabulary.load(tmp_path, entry)


def test_coco_80_fixed_vocabulary_is_under_1_mib():
    from litetext.calibration.data import builtin_asset

    names = builtin_asset("prompts_coco_80_names.txt").read_text().splitlines()
    assert len(names) == 80
    # full size: 256 wide, context 16, fp16; plus the list file
    size = fixed_vocabulary_size_bytes(len(names), 16, 256, "fp16") + sum(len(n) + 1 for n in names)
    assert size < 2**20, size


# Pruned token table -------------------------------------------------------------------------------------------

CORPUS = ["person", "bicycle", "car", "traffic light", "a man riding a horse", "red umbrella", "dog on a sofa"]
COVERED = ["person", "car", "a red horse", "traffic light on a sofa", "Dog  riding a bicycle"]
UNCOVERED = ["xylophone", "a zebra crossing", "quokka selfie", "café au lait"]


@pytest.fixture(scope="module")
def pruned():
    return prune_vocabulary(CORPUS)


def test_pruned_tokenizer_gives_same_ids_on_covered_prompts(pruned):
    from tokenizers import Tokenizer

    from litetext.tokenizer import ClipTokenizer

    tok = ClipTokenizer()
    assert set(range(512)) | {49406, 49407} <= set(pruned.kept_ids.tolist())
    assert pruned.old_to_new[0] == 0 and pruned.old_to_new[49407] == len(pruned) - 1
    fast = Tokenizer.from_str(pruned.tokenizer_json(CTX, pad_id=0))
    for p in COVERED:
        assert pruned.covers(p)
        full = tok([p], context_length=CTX).input_ids[0]
        assert fast.encode(p).ids == pruned.old_to_new[full].tolist()
    for p in UNCOVERED:
        assert not pruned.covers(p)
        ids = fast.encode(p).ids
        assert len(ids) == CTX and max(ids) < len(pruned)  # still tokenizes, within the pruned table
    # transformers padding pads with the end token: its new id
    fast = Tokenizer.from_str(pruned.tokenizer_json(CTX, pad_id=49407))
    assert fast.encode("car").ids[-1] == len(pruned) - 1


def test_pruned_vocabulary_round_trip(pruned, tmp_path):
    from litetext.vocabulary.stored import PrunedVocabulary

    pruned.save(tmp_path / "p.json")
    back = PrunedVocabulary.load(tmp_path / "p.json")
    assert (back.kept_ids == pruned.kept_ids).all()
    assert json.loads((tmp_path / "p.json").read_text())["corpus_tokens"] == pruned.corpus_tokens
    with pytest.raises(LitetextError):
        pruned.remap(np.array([49405]))


# Bundles: fixed vocabulary and pruned text encoder ----------------------------------------------------------

IMAGES = [builtin_image()]


@pytest.fixture(scope="module")
def full_bundle(tiny_s0, tmp_path_factory):
    from litetext.export import export_bundle

    out = tmp_path_factory.mktemp("full") / "full"
    export_bundle(tiny_s0, out, context_length=CTX, parity_prompts=PROMPTS, parity_images=IMAGES)
    return out


@pytest.fixture(scope="module")
def pruned_bundle(tiny_s0, tmp_path_factory):
    """All three graphs, the text encoder pruned to CORPUS's tokens, checked on covered and uncovered prompts."""
    from litetext.export import export_bundle

    out = tmp_path_factory.mktemp("pruned") / "pruned"
    manifest = export_bundle(tiny_s0, out, context_length=CTX, parity_prompts=COVERED + UNCOVERED,
                             parity_images=IMAGES, prune_vocabulary=CORPUS)
    return out, manifest


def test_fixed_vocabulary_bundle_predicts_like_text_encoder_bundle(transformers_s0, tmp_path):
    from litetext.calibration.data import load_rgb
    from litetext.export import export_bundle
    from litetext.bundle import Bundle
    from litetext.predict import Predictor

    # transformers' weights: scores within 1e-4 hold for them (fp16 features, see FP16_HEADS_ATOL)
    tiny_s0, full_bundle = transformers_s0, tmp_path / "full"
    export_bundle(tiny_s0, full_bundle, context_length=CTX, parity_prompts=PROMPTS, parity_images=IMAGES)
    fixed = export_bundle(tiny_s0, tmp_path / "fixed", context_length=CTX, parity_prompts=PROMPTS,
                          parity_images=IMAGES, vocabulary=PROMPTS)
    assert Bundle.open(full_bundle).manifest["text_path"] == {"kind": "text_encoder"}
    assert fixed["text_path"]["kind"] == "fixed_vocabulary" and "text_encoder" not in fixed["graphs"]
    assert not (tmp_path / "fixed" / "text_encoder.onnx").exists()
    rgb = load_rgb(IMAGES[0])
    a, b = Predictor(full_bundle), Predictor(tmp_path / "fixed")
    for prompt in ("person", "Traffic Light"):
        want, got = a(rgb, prompt, threshold=0.0), b(rgb, prompt, threshold=0.0)
        assert len(want) == len(got)
        assert np.allclose([i.score for i in want], [i.score for i in got], atol=1e-4)
        assert np.allclose([i.box for i in want], [i.box for i in got], atol=1e-2)
    with pytest.raises(LitetextError, match="vocabulary.txt"):
        b(rgb, "giraffe", threshold=0.0)


def test_pruned_bundle_is_exact_on_covered_prompts(pruned_bundle, tiny_s0, padding):
    from litetext.bundle import Bundle
    from litetext.tokenizer import ClipTokenizer
    from litetext.vocabulary.stored import PrunedTokenizer

    out, manifest = pruned_bundle
    bundle = Bundle.open(out)
    tokenizer = bundle.tokenizer()
    assert isinstance(tokenizer.tokenizer, PrunedTokenizer)  # bound to the bundle (Bundle.tokenizer)
    pruned = prune_vocabulary(CORPUS)
    full = ClipTokenizer()(COVERED, context_length=CTX)
    new = tokenizer(COVERED, CTX, padding.pad_id)
    assert (new.input_ids == pruned.old_to_new[full.input_ids]).all()  # the bundle's ids: CLIP's, remapped
    with torch.inference_mode():
        want = build_graph("text_encoder", tiny_s0, CTX, padding)(torch.from_numpy(full.input_ids)).numpy()
    got = bundle.runner("text_encoder").infer({"input_ids": new.input_ids})["text_features"]
    assert np.abs(want - got).max() <= 1e-5
    figures = manifest["graphs"]["text_encoder"]["parity"]["outputs"]["text_features"]
    assert figures["max_abs_error"] <= 1e-5 and figures["count"] == full.attention_mask.sum()  # covered tokens only


def test_pruned_bundle_manifest_figures(pruned_bundle, tiny_s0):
    import hashlib

    import onnx

    out, manifest = pruned_bundle
    entry = manifest["text_path"]
    pruned = prune_vocabulary(CORPUS)
    kept = len(pruned)
    assert entry["kind"] == "pruned_text_encoder" and entry["kept_tokens"] == kept == 561
    # every kept token but the 512 bytes and the start and end tokens is made by exactly one kept merge
    assert entry["kept_merges"] == len(pruned.merges()) == kept - 512 - 2
    corpus = ("\n".join(CORPUS) + "\n").encode()
    assert entry["corpus"] == {"prompts": len(CORPUS), "sha256": hashlib.sha256(corpus).hexdigest(),
                               "tokens": pruned.corpus_tokens}
    # tiny S0: 1,602,688 parameters, 1,581,056 of them the token table (49,408 x 32)
    params = entry["parameters"]
    assert params["before"] == 1_602_688 and params["after"] == 1_602_688 - (49_408 - kept) * 32
    assert params["ratio"] == pytest.approx(params["after"] / params["before"], abs=1e-4)
    sizes = {name: (out / name).stat().st_size for name in ("text_encoder.onnx", "tokenizer.json")}
    assert entry["bytes"] == {"text_encoder": sizes["text_encoder.onnx"], "tokenizer_json": sizes["tokenizer.json"],
                              "text_path": sum(sizes.values())}
    assert entry["parity_prompts"]["prompts"] == len(COVERED + UNCOVERED)
    assert entry["parity_prompts"]["covered"] == len(COVERED)
    uncovered = entry["uncovered_parity"]
    assert uncovered["prompts"] == len(UNCOVERED)
    assert 0 < uncovered["pooled_cosine_min"] <= uncovered["pooled_cosine_mean"] <= 1
    assert uncovered["extra_tokens_mean"] > 0  # the coarser split takes more tokens
    assert manifest["tokenizer"] == {**manifest["tokenizer"], "pad_id": 0, "start_id": kept - 2, "end_id": kept - 1,
                                     "vocabulary_size": kept}
    # the exported graph holds only the kept rows
    tables = [list(t.dims) for t in onnx.load(out / "text_encoder.onnx").graph.initializer if 32 in t.dims[-1:]]
    assert [kept, 32] in tables and not any(49_408 in dims for dims in tables)


def test_pruned_tokenizer_json_round_trip(pruned_bundle, padding):
    from tokenizers import Tokenizer

    from litetext.bundle import Bundle
    from litetext.tokenizer import TruncationWarning
    from litetext.vocabulary.stored import PrunedVocabulary

    out, manifest = pruned_bundle
    pruned = prune_vocabulary(CORPUS)
    assert (PrunedVocabulary.load(out / "pruned_tokens.json").kept_ids == pruned.kept_ids).all()
    assert (out / "tokenizer.json").read_text() == pruned.tokenizer_json(CTX, pad_id=0)
    app = Tokenizer.from_file(str(out / "tokenizer.json"))  # what an app loads
    tokenizer = Bundle.open(out).tokenizer()
    prompts = COVERED + UNCOVERED
    assert tokenizer(prompts, CTX, padding.pad_id).input_ids.tolist() == [e.ids for e in app.encode_batch(prompts)]
    # the transformers convention pads with the end token: its new id; truncation keeps the end token last
    with pytest.warns(TruncationWarning):
        batch = tokenizer(["car", "red " * 30], CTX, pad_id=49407)
    assert batch.input_ids[0, 3:].tolist() == [len(pruned) - 1] * (CTX - 3)
    assert batch.input_ids[1, -1] == len(pruned) - 1 and batch.truncated.tolist() == [False, True]
    assert batch.lengths.tolist() == [3, CTX]
    with pytest.raises(LitetextError, match="empty"):
        tokenizer(["   "], CTX)


def test_pruned_bundle_tampered_tokenizer_is_refused(pruned_bundle, tmp_path):
    import shutil

    from litetext.bundle import Bundle

    copy = tmp_path / "b"
    shutil.copytree(pruned_bundle[0], copy)
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text().replace('"car</w>"', '"cat</w>"'))
    with pytest.raises(LitetextError, match="sha256"):
        Bundle.open(copy).tokenizer()


def test_predict_on_pruned_bundle(pruned_bundle, full_bundle):
    from litetext.calibration.data import load_rgb
    from litetext.predict import Predictor

    rgb = load_rgb(IMAGES[0])
    pruned, full = Predictor(pruned_bundle[0]), Predictor(full_bundle)
    want, got = full(rgb, "a red horse", threshold=0.0), pruned(rgb, "a red horse", threshold=0.0)
    assert len(want) == len(got) == 12  # every query of the tiny heads; covered: the full bundle's instances
    assert np.abs(np.array([i.score for i in want]) - [i.score for i in got]).max() <= 1e-5
    assert np.abs(np.array([i.box for i in want]) - [i.box for i in got]).max() <= 1e-3
    assert len(pruned(rgb, "xylophone", threshold=0.0)) == 12  # uncovered: a coarser split, still runs


@pytest.mark.parametrize("options, message", [
    (dict(vocabulary=PROMPTS), "choose one"),
    (dict(graphs=["vision_encoder"]), "add text_encoder"),
    (dict(parity_prompts=UNCOVERED), "none of the 4 parity prompts is covered"),
])
def test_pruning_errors(tiny_s0, tmp_path, options, message):
    from litetext.export import export_bundle

    options = {"graphs": ["text_encoder"], **options}
    with pytest.raises(LitetextError, match=message):
        export_bundle(tiny_s0, tmp_path / "b", context_length=CTX, prune_vocabulary=CORPUS, **options)
    assert not (tmp_path / "b").exists()


def test_pruning_the_teacher_is_refused(tiny_teacher, tmp_path):
    from litetext.export import export_bundle

    with pytest.raises(LitetextError, match="LiteText students"):
        export_bundle(tiny_teacher, tmp_path / "b", graphs=["text_encoder"], prune_vocabulary=CORPUS)


@pytest.mark.parametrize("target, precision", [("tensorrt", "int8"), ("coreml", "fp16")])
def test_pruned_text_encoder_on_other_targets(tiny_s0, tmp_path, target, precision):
    from litetext.calibration.data import builtin_prompts
    from litetext.export import export_bundle
    from litetext.bundle import Bundle

    if target == "coreml":
        pytest.importorskip("coremltools")
    names = builtin_prompts()  # the 80 COCO names: the corpus is 60 of them, the other 20 held out
    manifest = export_bundle(tiny_s0, tmp_path / "b", target=target, precision=precision, graphs=["text_encoder"],
                             context_length=CTX, prune_vocabulary=names[:60])
    entry, graph = manifest["text_path"], manifest["graphs"]["text_encoder"]
    assert entry["parity_prompts"]["covered"] == 60 and entry["uncovered_parity"]["prompts"] == 20
    figures = graph["parity"]["outputs"]["text_features"]
    if precision == "int8":  # calibrated on the pruned tokenizer's ids; the INT8 gate on covered prompts
        assert graph["calibration"]["token_ids"].startswith("the set's prompts tokenized with the pruned")
        assert figures["cosine_mean"] >= 0.995 and figures["cosine_worst_1pct"] >= 0.98
    else:
        assert figures["cosine_min"] >= 0.999
    # the tiny table alone is 3.0 MiB in fp16 (49,408 x 32): the pruned graph holds 1,3xx rows
    assert graph["bytes"] < 2**20 and entry["kept_tokens"] < 2_000
    assert Bundle.open(tmp_path / "b").tokenizer()(["person"], CTX).input_ids[0, 0] == entry["kept_tokens"] - 2


def test_cli_prunes_and_refuses_with_vocabulary(tiny_s0, tmp_path):
    from click.testing import CliRunner

    from litetext.cli import main

    checkpoint = tmp_path / "ckpt"
    tiny_s0.model.save_pretrained(checkpoint)
    corpus, held_out = tmp_path / "corpus.txt", tmp_path / "held_out.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    held_out.write_text("\n".join(COVERED + UNCOVERED) + "\n")
    base = ["export", "--checkpoint", str(checkpoint), "--graphs", "text_encoder", "--parity-prompts", str(held_out),
            "--prune-vocabulary", str(corpus)]
    result = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "pruned: 561 of 49408 tokens" in result.output and "5 of 9 parity prompts covered" in result.output
    result = CliRunner().invoke(main, [*base, "--vocabulary", str(corpus), "-o", str(tmp_path / "c")])
    assert result.exit_code == 2 and "choose one" in result.output and not (tmp_path / "c").exists()


def test_bench_rows_for_pruned_and_fixed_vocabulary(pruned_bundle, tiny_s0, tmp_path):
    from conftest import tiny_overrides
    from litetext.benchmarks import BundleTarget, TimingOptions, TorchTarget, run_bench
    from litetext.benchmarks.report import results_table
    from litetext.export import export_bundle

    export_bundle(tiny_s0, tmp_path / "fixed", graphs=["text_encoder"], context_length=CTX, vocabulary=PROMPTS)
    reference = TorchTarget.from_loaded(tiny_s0, config_overrides=tiny_overrides("litetext-s0"), label="torch:tiny")
    targets = [BundleTarget(pruned_bundle[0]), BundleTarget(tmp_path / "fixed")]
    fast = TimingOptions(warmup=1, min_runs=3, min_seconds=0.0, max_seconds=5.0)
    pruned, fixed = run_bench(targets, graphs=["text_encoder"], batches=[4], prompts=PROMPTS, reference=reference,
                              timing=fast, memory=False)
    assert pruned["status"] == fixed["status"] == "ok"
    # pruned: exact on the covered bench prompts (all but "the man on the left holding an umbrella"); the
    # static memory of its text path is the graph and tokenizer.json
    files = [pruned_bundle[0] / n for n in ("text_encoder.onnx", "tokenizer.json")]
    assert pruned["text_path"]["bytes"] == sum(f.stat().st_size for f in files)
    # 2 batches of 4 rows (the 5 prompts wrap around): 1 row uncovered
    assert pruned["parity"]["coverage"] == {"prompts": 8, "covered": 7, "coverage": 0.875}
    assert pruned["parity"]["outputs"]["text_features"]["max_abs_error"] <= 1e-5
    assert pruned["parity"]["uncovered"]["prompts"] == 1
    # fixed vocabulary: a lookup at its storage precision, its features + list as static memory
    files = [tmp_path / "fixed" / n for n in ("text_features.npz", "vocabulary.txt")]
    assert fixed["runtime"] == "numpy lookup" and fixed["precision"] == "fp16"
    assert fixed["text_path"]["bytes"] == sum(f.stat().st_size for f in files)
    assert fixed["memory_mb"]["weights"] * 2**20 == pytest.approx(fixed["text_path"]["bytes"])
    assert fixed["latency_ms"]["runs"] >= 3
    assert 0 < fixed["parity"]["outputs"]["text_features"]["max_abs_error"] < 1e-2  # fp16 storage
    table = results_table([pruned, fixed])
    assert "| S0 pruned (561 tokens) | text_encoder |" in table
    assert "| S0 fixed vocabulary (5) | text_encoder |" in table
    (unknown,) = run_bench(targets[1:], graphs=["text_encoder"], batches=[1], prompts=["giraffe"], reference=reference,
                           timing=fast, memory=False)
    assert unknown["status"] == "failed" and "--prompts" in unknown["error"]
