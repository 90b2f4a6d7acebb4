"""Fixed-vocabulary text path and pruned token table (litetext.vocabulary)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from litetext.errors import LitetextError
from litetext.models.graphs import build_graph, get_padding
from litetext.vocabulary import (
    FEATURES_FILE,
    PROMPTS_FILE,
    FixedVocabulary,
    build_fixed_vocabulary,
    fixed_vocabulary_size_bytes,
    prune_onnx_text_encoder,
    prune_vocabulary,
)

CTX = 16
PROMPTS = ["person", "a red car", "dog", "traffic light", "the man on the left holding an umbrella"]
# Stored fp16 features fed to the heads, against fp32 features through the text encoder (tiny S0, seed 0):
# on the 80 COCO names, measured max error 5.5e-6 (fp16) and 1.4e-4 (int8), on pred_logits; bound with margin.
FP16_HEADS_ATOL = 1e-4
INT8_HEADS_ATOL = 2e-3


@pytest.fixture(scope="module")
def padding():
    return get_padding("upstream")


@pytest.fixture(scope="module")
def heads_inputs(tiny_s0):
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
def test_heads_fed_with_stored_features_match_text_encoder(tiny_s0, padding, heads_inputs, precision, atol):
    from litetext.tokenizer import ClipTokenizer

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


@pytest.fixture(scope="module")
def tiny_text_onnx(tiny_s0, tmp_path_factory):
    from litetext.export import export_bundle

    out = tmp_path_factory.mktemp("vocab") / "s0"
    export_bundle(tiny_s0, out, graphs=["text_encoder"], context_length=CTX, parity_prompts=CORPUS)
    return out / "text_encoder.onnx"


def test_pruned_onnx_is_exact_on_covered_prompts(tiny_text_onnx, pruned, tmp_path):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from litetext.tokenizer import ClipTokenizer

    report = prune_onnx_text_encoder(tiny_text_onnx, tmp_path / "pruned.onnx", pruned)
    assert report["table_rows"] == [49408, len(pruned)] and report["parameters_after"] < report["parameters_before"]
    full = ort.InferenceSession(str(tiny_text_onnx), providers=["CPUExecutionProvider"])
    small = ort.InferenceSession(str(tmp_path / "pruned.onnx"), providers=["CPUExecutionProvider"])
    fast = Tokenizer.from_str(pruned.tokenizer_json(CTX, pad_id=0))
    ids = ClipTokenizer()(COVERED, context_length=CTX).input_ids
    new_ids = np.array([e.ids for e in fast.encode_batch(COVERED)], dtype=np.int64)
    want = full.run(None, {"input_ids": ids})[0]
    got = small.run(None, {"input_ids": new_ids})[0]
    assert np.abs(want - got).max() == 0.0
    # uncovered prompts run (coarser split) and stay close in direction on valid tokens
    got = small.run(None, {"input_ids": np.array([e.ids for e in fast.encode_batch(UNCOVERED)], dtype=np.int64)})[0]
    assert np.isfinite(got).all()


def test_pruned_vocabulary_round_trip(pruned, tmp_path):
    from litetext.vocabulary import PrunedVocabulary

    pruned.save(tmp_path / "p.json")
    back = PrunedVocabulary.load(tmp_path / "p.json")
    assert (back.kept_ids == pruned.kept_ids).all()
    assert json.loads((tmp_path / "p.json").read_text())["corpus_tokens"] == pruned.corpus_tokens
    with pytest.raises(LitetextError):
        pruned.remap(np.array([49405]))


# Bundle integration (active once export_bundle takes `vocabulary`) -------------------------------------------

def _export_takes_vocabulary() -> bool:
    import inspect

    from litetext.export import export_bundle

    return "vocabulary" in inspect.signature(export_bundle).parameters


@pytest.mark.skipif(not _export_takes_vocabulary(), reason="export_bundle has no vocabulary option yet")
def test_fixed_vocabulary_bundle_predicts_like_text_encoder_bundle(tiny_s0, tmp_path):
    from litetext.calibration.data import builtin_asset, load_rgb
    from litetext.export import export_bundle
    from litetext.predict import Predictor

    images = [builtin_asset("chelsea.png")]
    full = export_bundle(tiny_s0, tmp_path / "full", context_length=CTX, parity_prompts=PROMPTS, parity_images=images)
    fixed = export_bundle(tiny_s0, tmp_path / "fixed", context_length=CTX, parity_prompts=PROMPTS,
                          parity_images=images, vocabulary=PROMPTS)
    assert full["text_path"] == {"kind": "text_encoder"}
    assert fixed["text_path"]["kind"] == "fixed_vocabulary" and "text_encoder" not in fixed["graphs"]
    assert not (tmp_path / "fixed" / "text_encoder.onnx").exists()
    rgb = load_rgb(images[0])
    a, b = Predictor(tmp_path / "full"), Predictor(tmp_path / "fixed")
    for prompt in ("person", "Traffic Light"):
        want, got = a(rgb, prompt, threshold=0.0), b(rgb, prompt, threshold=0.0)
        assert len(want) == len(got)
        assert np.allclose([i.score for i in want], [i.score for i in got], atol=1e-4)
        assert np.allclose([i.box for i in want], [i.box for i in got], atol=1e-2)
    with pytest.raises(LitetextError, match="vocabulary.txt"):
        b(rgb, "giraffe", threshold=0.0)
