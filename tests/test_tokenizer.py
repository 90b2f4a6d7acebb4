"""litetext.tokenizer against open_clip's SimpleTokenizer (the reference) and its tokenizer.json export."""

from __future__ import annotations

import functools
import importlib.util
import os
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest

from litetext.tokenizer import (
    EOT_ID,
    SOT_ID,
    VOCAB_SIZE,
    ClipTokenizer,
    TruncationWarning,
    bytes_to_unicode,
    clean_text,
    write_tokenizer_json,
)

REPO = Path(__file__).resolve().parents[1]
NUM_PROMPTS = 88_853  # calib 70,530 + eval 18,323 (shared/data/prompts/SOURCES.md)
TRUNCATED = {16: 968, 32: 2, 77: 0}  # prompts of the set longer than each context
DECODED = "dog 's fish 🐱 "  # decode of "dog’s ﬁsh 🐱": words end in a space

# Hard cases for tokenizer.json: (prompt, whether tokenizer.json gives the reference's ids).
HARD_CASES = [
    ("ｃａｔ", True),  # fullwidth letters
    ("ＬＯＵＤ　ＮＯＩＳＥＳ！", True),  # fullwidth, ideographic space
    ("ﬁsh and ﬂower", True),  # Latin ligatures
    ("ﬅreet", True),  # ftfy keeps the long s of this ligature
    ("Ĳssel", True),  # Dutch digraph
    ("fish &amp; chips", True),
    ("rock &amp roll", True),  # html.unescape also takes a few entities without ";"
    ("&amp;amp;lt;b&amp;gt;", True),  # escaped twice
    ("&quot;red&quot; car", True),
    ("it&#39;s a dog&apos;s toy", True),
    ("a&nbsp;cat", True),
    ("dog’s toy", True),  # curly apostrophe
    ("“quoted” ‘single’", True),
    ("\x93cp1252 quotes\x94", True),  # C1 controls, read as Windows-1252
    ("&rsquo;tis", True),
    ("café naïve Ångström", True),
    ("cafe\u0301", True),  # decomposed accent, NFC
    ("İstanbul", True),  # dotted capital I lowercases to two characters
    ("ΟΔΟΣ ΣΟΦΙΑΣ", True),  # final sigma
    ("🐱 cat 👍🏽 🇫🇷", True),  # emoji, skin tone, flag
    ("猫 一只猫", True),  # CJK
    ("ｶﾞｯﾂ", True),  # halfwidth katakana with a voicing mark to compose
    ("tab\tand\nnew line\u2028x", True),
    ("zero\u200bwidth\u00a0space", True),
    ("nul\x00l \ufeffbom", True),  # control characters ftfy deletes
    ("\x1b[31mred\x1b[0m", True),  # terminal colour escape
    ("it'S THEY'RE", True),
    ("a <start_of_text> b", True),
    # Documented differences (write_tokenizer_json's docstring):
    ("cafÃ©", False),  # mojibake that ftfy repairs
    ("&eacute;clair", False),  # named entity beyond the common ones
    ("caf&#233;", False),  # numeric entity beyond the common ones
    ("a < b &rsquo;", False),  # after "<" ftfy decodes no entity, so the quote stays curly
    ("cat'<end_of_text>", False),  # a special token glued to punctuation
]
# Unicode blocks the normalizer rewrites, plus their neighbours: every assigned character is checked.
SWEEP = [
    *range(0x0, 0x590),  # ASCII, C1, Latin, IPA, Greek, Cyrillic
    *range(0x2000, 0x2070),  # general punctuation
    *range(0x3000, 0x3040),  # CJK symbols
    *range(0xFB00, 0xFB50),  # alphabetic presentation forms (ligatures)
    *range(0xFF00, 0xFFF0),  # halfwidth and fullwidth forms
]


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    root = Path(os.environ.get("LITETEXT_SHARED_DATA", REPO.parent / "shared" / "data")) / "prompts"
    files = sorted(root.glob("calib/*.txt")) + sorted(root.glob("eval/*.txt"))
    if not files:
        pytest.skip(f"no prompt files under {root}; set LITETEXT_SHARED_DATA to the shared data folder")
    return [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def reference():
    """open_clip's SimpleTokenizer, loaded from its file: importing the open_clip package needs torchvision."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip_torch is not installed: pip install --no-deps open_clip_torch==3.3.0")
    pytest.importorskip("torch", reason="the reference tokenizer returns torch tensors")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_reference_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    module_spec.loader.exec_module(module)
    # The module turns off the tokenizers library's threads on import; keep them for encode_batch.
    if parallelism is None:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = parallelism
    return module


@pytest.fixture(scope="module")
def ref(reference):
    """The reference tokenizer. Its encode is pure, so it is memoized: the contexts then share one ftfy pass."""
    tokenizer = reference.SimpleTokenizer()
    tokenizer.encode = functools.cache(tokenizer.encode)
    return tokenizer


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def ours(tok, prompts):
    """Our batch of all prompts at a context length, computed once."""

    @functools.cache
    def at(context_length: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            return tok(prompts, context_length)

    return at


@pytest.fixture(scope="module")
def json_tokenizer(tmp_path_factory):
    """tokenizer.json written at a context length and loaded with the tokenizers library."""
    from tokenizers import Tokenizer

    folder = tmp_path_factory.mktemp("tokenizer_json")

    @functools.cache
    def at(context_length: int, pad_id: int = 0):
        path = folder / f"tokenizer_{context_length}_{pad_id}.json"
        write_tokenizer_json(path, context_length, pad_id)
        return Tokenizer.from_file(str(path))

    return at


def json_body(tokenizer, text: str) -> list[int]:
    """tokenizer.json's ids of one prompt without start, end or padding."""
    encoding = tokenizer.encode(text)
    return encoding.ids[1 : sum(encoding.attention_mask) - 1]


# ClipTokenizer against the reference ----------------------------------------------------------------------------


def test_vocabulary_matches_reference(tok, reference, ref):
    assert tok.vocab == ref.encoder
    assert len(tok.vocab) == VOCAB_SIZE == 49_408
    assert (tok.vocab["<start_of_text>"], tok.vocab["<end_of_text>"]) == (SOT_ID, EOT_ID) == (49_406, 49_407)
    assert bytes_to_unicode() == reference.bytes_to_unicode()


@pytest.mark.parametrize("context_length", [77, 32, 16])
def test_ids_match_reference_on_all_prompts(prompts, ref, ours, context_length):
    assert len(prompts) == NUM_PROMPTS
    expected = ref(prompts, context_length=context_length).numpy()
    batch = ours(context_length)
    assert batch.input_ids.dtype == batch.attention_mask.dtype == np.int64
    assert int((batch.input_ids != expected).any(axis=1).sum()) == 0
    assert batch.num_truncated == TRUNCATED[context_length]
    rows = np.arange(len(prompts))
    assert (batch.input_ids[:, 0] == SOT_ID).all() and (batch.input_ids[rows, batch.lengths - 1] == EOT_ID).all()
    assert (batch.attention_mask.sum(axis=1) == batch.lengths).all()


def test_hard_cases_and_boundaries_match_reference(tok, ref):
    for text, _ in HARD_CASES:
        assert tok.encode(text) == ref.encode(text), text
    # Bodies of context-3 .. context+1 tokens around the truncation boundary of an 8-token context.
    texts = [" ".join(["cat"] * n) for n in range(5, 10)]
    with pytest.warns(TruncationWarning):
        batch = tok(texts, 8)
    assert np.array_equal(batch.input_ids, ref(texts, context_length=8).numpy())
    assert batch.truncated.tolist() == [False, False, True, True, True]
    assert ref.decode(tok.encode("dog’s ﬁsh 🐱")) == DECODED


# ClipTokenizer's own contract ------------------------------------------------------------------------------------


def test_layout_and_truncation_keeps_end_token(tok):
    cat = tok.encode("cat")
    assert len(cat) == 1
    with pytest.warns(TruncationWarning, match=r"^1 of 2 prompts .* context_length=5"):
        batch = tok(["cat " * 20, "cat"], 5, pad_id=7)
    assert batch.input_ids.tolist() == [[SOT_ID, *cat * 3, EOT_ID], [SOT_ID, *cat, EOT_ID, 7, 7]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.lengths.tolist() == [5, 3]
    assert batch.truncated.tolist() == [True, False] and batch.num_truncated == 1


def test_no_warning_when_everything_fits(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = tok("a cat", 77)
    assert batch.input_ids.shape == (1, 77) and batch.num_truncated == 0


@pytest.mark.parametrize("blank", ["", "   ", "\u3000\t", "&nbsp;", "\x00"])
def test_empty_prompt_names_its_index(tok, blank):
    with pytest.raises(ValueError, match=r"prompt 1 .*empty after cleaning"):
        tok(["cat", blank, "dog"], 16)


def test_bad_inputs(tok):
    with pytest.raises(TypeError, match="prompt 1 is a int"):
        tok(["cat", 3], 16)
    with pytest.raises(TypeError, match="str or a list of str"):
        tok(None, 16)
    with pytest.raises(TypeError, match="got bytes"):
        tok.encode(b"cat")
    with pytest.raises(ValueError, match="at least 3"):
        tok("cat", 2)


# tokenizer.json -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("context_length", [16, 32])
def test_json_matches_on_all_prompts(prompts, ours, json_tokenizer, context_length):
    unique, index = np.unique(np.array(prompts, dtype=object), return_inverse=True)  # 81,512 distinct prompts
    encodings = json_tokenizer(context_length).encode_batch(unique.tolist())
    ids = np.array([e.ids for e in encodings], dtype=np.int64)[index]
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)[index]
    batch = ours(context_length)
    differing = (ids != batch.input_ids).any(axis=1) | (mask != batch.attention_mask).any(axis=1)
    assert int(differing.sum()) == 0, [prompts[i] for i in np.flatnonzero(differing)[:10]]


def test_json_hard_cases(tok, json_tokenizer):
    tokenizer = json_tokenizer(77)
    differing = [text for text, _ in HARD_CASES if json_body(tokenizer, text) != tok.encode(text)]
    assert differing == [text for text, agrees in HARD_CASES if not agrees]
    for text, agrees in HARD_CASES:
        if agrees:
            assert tokenizer.normalizer.normalize_str(text) == clean_text(text), text


def test_json_single_characters(tok, json_tokenizer):
    tokenizer = json_tokenizer(77)
    chars = [chr(c) for c in SWEEP if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    texts = [f"X{c}y" for c in chars] + chars
    encodings = tokenizer.encode_batch(texts)
    differing = [t for t, e in zip(texts, encodings) if e.ids[1 : sum(e.attention_mask) - 1] != tok.encode(t)]
    assert len(texts) > 3_000 and differing == []


def test_json_truncation_padding_and_decode(tok, json_tokenizer):
    texts = [" ".join(["cat"] * n) for n in range(5, 10)] + ["dog’s ﬁsh 🐱"]  # bodies around 8 - 2 tokens
    with pytest.warns(TruncationWarning):
        batch = tok(texts, 8, pad_id=EOT_ID)
    encodings = json_tokenizer(8, EOT_ID).encode_batch(texts)
    assert [e.ids for e in encodings] == batch.input_ids.tolist()
    assert [e.attention_mask for e in encodings] == batch.attention_mask.tolist()
    assert batch.truncated.tolist() == [False, False, True, True, True, False]
    decoded = json_tokenizer(77).decode([SOT_ID, *tok.encode(texts[-1]), EOT_ID])  # special tokens are skipped
    assert decoded == DECODED  # the reference's decode, checked against it above


def test_json_is_deterministic_and_atomic(tmp_path):
    from tokenizers import Tokenizer

    first, second = tmp_path / "a" / "tokenizer.json", tmp_path / "tokenizer.json"
    first.parent.mkdir()
    write_tokenizer_json(first, 32)
    write_tokenizer_json(second, 32)
    write_tokenizer_json(second, 32)  # overwrite in place
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "tokenizer.json"]  # no temporary file left
    assert Tokenizer.from_file(str(second)).get_vocab_size() == VOCAB_SIZE


def test_json_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        write_tokenizer_json(tmp_path / "t.json", 2)
    with pytest.raises(ValueError, match="pad_id"):
        write_tokenizer_json(tmp_path / "t.json", 16, pad_id=VOCAB_SIZE)
    assert list(tmp_path.iterdir()) == []
