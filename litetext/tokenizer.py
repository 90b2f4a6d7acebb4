"""CLIP BPE tokenizer with the same ids as open_clip's ``SimpleTokenizer`` (which SAM3 uses), and an export of
it as a Hugging Face ``tokenizers`` ``tokenizer.json`` for apps (Swift, C++, Rust) that do not run Python.

The reference's pipeline, which :class:`ClipTokenizer` reproduces:

1. clean: ``ftfy.fix_text``, ``html.unescape`` twice, collapse whitespace (``str.split``), ``str.lower``;
2. split with :data:`PATTERN` (letter runs, single digits, runs of other symbols, English contractions);
3. map each piece's UTF-8 bytes to printable characters (:func:`bytes_to_unicode`), mark the last one with
   ``</w>`` and apply the 48,894 BPE merges, lowest rank first;
4. ``[<start_of_text>, ids..., <end_of_text>, pad...]``; a prompt that does not fit keeps its first
   ``context_length - 2`` ids and the end token.
"""

from __future__ import annotations

import gzip
import html
import os
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex

from litetext.errors import LitetextError

BPE_PATH = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 48_894
VOCAB_SIZE = 49_408  # 256 bytes + the same with </w> + one token per merge + start + end
SOT, EOT = "<start_of_text>", "<end_of_text>"
SOT_ID, EOT_ID = 49_406, 49_407
EOW = "</w>"
# The reference's pre-tokenizer, used case-insensitively. Its first two alternatives give a prompt that contains
# "<start_of_text>" that id in the middle; kept for parity.
PATTERN = rf"""{SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+"""


class TruncationWarning(UserWarning):
    """Some prompts were longer than the context and were cut."""


@cache
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character: printable Latin-1 bytes map to themselves, the other 68 to U+0100 onward
    in byte order, so BPE never sees whitespace or control characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


@cache
def load_merges() -> tuple[tuple[str, str], ...]:
    """The merges in rank order (the file's first line is a version header)."""
    lines = gzip.decompress(BPE_PATH.read_bytes()).decode("utf-8").split("\n")[1 : NUM_MERGES + 1]
    return tuple((a, b) for a, b in map(str.split, lines))


@cache
def load_vocab() -> dict[str, int]:
    """Token -> id: byte characters (sorted by code point, which is the reference's order), the same with
    ``</w>``, one token per merge, then the start and end tokens."""
    chars = sorted(bytes_to_unicode().values())
    tokens = [*chars, *(c + EOW for c in chars), *(a + b for a, b in load_merges()), SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{BPE_PATH} is not CLIP's BPE vocabulary: {len(vocab)} distinct tokens")
    return vocab


def clean_text(text: str) -> str:
    """The reference's text cleaning ('lower' mode)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


@dataclass(frozen=True, eq=False)
class TokenizedBatch:
    """Token ids of a batch laid out as ``[SOT, ids..., EOT, pad...]``."""

    input_ids: np.ndarray  # int64 [B, L]
    attention_mask: np.ndarray  # int64 [B, L], 1 from SOT to EOT inclusive
    lengths: np.ndarray  # int64 [B], tokens incl. SOT and EOT after truncation (EOT is at lengths - 1)
    truncated: np.ndarray  # bool [B], prompts that were cut to fit the context

    @property
    def num_truncated(self) -> int:
        return int(self.truncated.sum())

    def feeds(self, size: int) -> list[dict[str, np.ndarray]]:
        return text_feeds(self.input_ids, self.attention_mask, size)


def text_feeds(input_ids: np.ndarray, attention_mask: np.ndarray, size: int) -> list[dict[str, np.ndarray]]:
    """A text encoder's feeds: `size` prompts each (the last may have fewer), in order."""
    return [{"input_ids": input_ids[i : i + size], "attention_mask": attention_mask[i : i + size]}
            for i in range(0, len(input_ids), size)]


class ClipTokenizer:
    """CLIP BPE tokenizer; ids equal open_clip's ``SimpleTokenizer`` (``clean='lower'``)."""

    def __init__(self) -> None:
        self.vocab = load_vocab()
        self._ranks = {pair: rank for rank, pair in enumerate(load_merges())}
        self._byte_chars = [bytes_to_unicode()[b] for b in range(256)]
        self._pattern = regex.compile(PATTERN, regex.IGNORECASE)
        # Prompts repeat a small set of words, so caching per word makes BPE cost negligible.
        self._word_ids = lru_cache(maxsize=1 << 16)(self._bpe)

    def _bpe(self, piece: str) -> tuple[int, ...]:
        if piece in (SOT, EOT):
            return (self.vocab[piece],)
        chars = [self._byte_chars[b] for b in piece.encode("utf-8")]
        symbols = chars[:-1] + [chars[-1] + EOW]
        while len(symbols) > 1:
            # Merge every occurrence of the lowest-ranked adjacent pair, left to right.
            pair = min(zip(symbols, symbols[1:]), key=lambda p: self._ranks.get(p, NUM_MERGES))
            if pair not in self._ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(self.vocab[s] for s in symbols)

    def encode(self, text: str) -> list[int]:
        """BPE ids of one prompt, without start/end tokens."""
        if not isinstance(text, str):
            raise TypeError(f"expected a prompt string, got {type(text).__name__}")
        return [i for piece in self._pattern.findall(clean_text(text)) for i in self._word_ids(piece)]

    def __call__(self, texts: str | Sequence[str], context_length: int, pad_id: int = 0) -> TokenizedBatch:
        """Tokenize prompts to ``[B, context_length]``. Prompts that do not fit are cut like the reference does
        (first ``context_length - 2`` ids, then EOT), flagged in ``truncated`` and reported with a
        :class:`TruncationWarning`."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        if context_length < 3:
            raise LitetextError(f"context_length must be at least 3 (start, one token, end), got {context_length}")
        ids = np.full((len(texts), context_length), pad_id, dtype=np.int64)
        lengths = np.zeros(len(texts), dtype=np.int64)
        truncated = np.zeros(len(texts), dtype=bool)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"prompt {row} is a {type(text).__name__}, expected str")
            body = self.encode(text)
            if not body:
                raise LitetextError(f"prompt {row} ({text!r}) is empty after cleaning; remove it or give it text")
            truncated[row] = len(body) > context_length - 2
            tokens = [SOT_ID, *body[: context_length - 2], EOT_ID]
            ids[row, : len(tokens)] = tokens
            lengths[row] = len(tokens)
        if truncated.any():
            warnings.warn(
                f"{truncated.sum()} of {len(texts)} prompts are longer than context_length={context_length} "
                "and were truncated (end token kept last); see TokenizedBatch.truncated",
                TruncationWarning,
                stacklevel=2,
            )
        mask = (np.arange(context_length) < lengths[:, None]).astype(np.int64)
        return TokenizedBatch(ids, mask, lengths, truncated)


# tokenizer.json ---------------------------------------------------------------------------------------------

# HTML entities that tokenizer.json decodes, as (Oniguruma regex, text); html.unescape knows 2,231 names plus
# numeric references. Chains like "&amp;amp;lt;" collapse first, as the reference unescapes repeatedly; amp, quot,
# lt, gt and nbsp also match without ";", as html.unescape does; curly quotes come out straight, as ftfy does.
_ENTITIES = (
    ("&(?:(?:amp|AMP);?)+", "&"),
    ("&(?:quot|QUOT);?|&#34;|&#[xX]22;", '"'),
    ("&(?:apos|#39|#[xX]27|lsquo|rsquo);", "'"),
    ("&(?:ldquo|rdquo);", '"'),
    ("&(?:lt|LT);?", "<"),
    ("&(?:gt|GT);?", ">"),
    ("&nbsp;?", " "),
    ("&ndash;", "\u2013"),
    ("&mdash;", "\u2014"),
    ("&hellip;", "\u2026"),
)
# ftfy's per-character fixes: terminal colour escapes and control characters it deletes, Latin ligatures and
# digraphs it splits (NFKC, but U+FB05 keeps its long s), curly quotes it straightens.
_ANSI = r"\x1B\[[0-9;]*[A-Za-z]"
_CONTROL = r"[\x00-\x08\x0B\x0E-\x1F\x7F\x{206A}-\x{206F}\x{FEFF}\x{FFF9}-\x{FFFC}]"
_LIGATURES = (0x132, 0x133, 0x149, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4), *range(0xFB00, 0xFB07))
_SINGLE_QUOTES = r"[\x{2BC}\x{2018}-\x{201B}]"
_DOUBLE_QUOTES = r"[\x{201C}-\x{201F}]"
# str.lower writes a final sigma at the end of a word; Lowercase maps every capital sigma to σ.
_FINAL_SIGMA = r"(?<=\p{Cased}\p{Case_Ignorable}*)Σ(?!\p{Case_Ignorable}*\p{Cased})"


def _char_map() -> dict[str, str]:
    """Single characters that ftfy rewrites regardless of context."""
    chars: dict[str, str] = {}
    for b in range(0x80, 0xA0):  # C1 controls are read as the Windows-1252 character of that byte
        try:
            chars[chr(b)] = bytes([b]).decode("cp1252")
        except UnicodeDecodeError:  # bytes Windows-1252 leaves undefined stay
            pass
    for c in map(chr, _LIGATURES):
        chars[c] = "\u017ft" if c == "\ufb05" else unicodedata.normalize("NFKC", c)
    chars["\u3000"] = " "  # halfwidth and fullwidth forms become their normal-width character
    for c in map(chr, range(0xFF01, 0xFFF0)):
        if unicodedata.normalize("NFKC", c) != c:
            chars[c] = unicodedata.normalize("NFKC", c)
    return chars


def _normalizer():
    """The reference's cleaning as far as ``tokenizers`` normalizers can express it (see write_tokenizer_json)."""
    from tokenizers import Regex, normalizers as nz

    spaces = "".join(f"\\x{{{c:X}}}" for c in range(0x3001) if chr(c).isspace())  # str.split's; none above
    # In the reference's order: ftfy decodes entities before its other fixes, lowercasing comes last.
    steps = [nz.Replace(Regex(pattern), text) for pattern, text in _ENTITIES]
    steps += [nz.Replace(Regex(_ANSI), ""), nz.Replace(Regex(_CONTROL), "")]
    steps += [nz.Replace(c, text) for c, text in _char_map().items()]
    steps += [
        nz.Replace(Regex(_SINGLE_QUOTES), "'"),
        nz.Replace(Regex(_DOUBLE_QUOTES), '"'),
        nz.NFC(),
        # The reference's pattern, case-insensitive, matches no alternative on U+0345 (it folds to iota, a
        # letter, but is not one), so it only separates words.
        nz.Replace("\u0345", " "),
        nz.Replace(Regex(f"[{spaces}]+"), " "),
        nz.Strip(),
        nz.Replace(Regex(_FINAL_SIGMA), "\u03c2"),
        nz.Lowercase(),
    ]
    return nz.Sequence(steps)


def _tokenizer_json(context_length: int, pad_id: int) -> str:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    if context_length < 3:
        raise ValueError(f"context_length must be at least 3 (start, one token, end), got {context_length}")
    if not 0 <= pad_id < VOCAB_SIZE:
        raise ValueError(f"pad_id must be a token id in [0, {VOCAB_SIZE}), got {pad_id}")
    vocab = load_vocab()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(load_merges()), end_of_word_suffix=EOW))
    tok.normalizer = _normalizer()
    # The reference's pattern without the special tokens (added tokens below), case-sensitive: Oniguruma's
    # case-insensitive [\p{L}] would take U+0345; on lowercased text the only fold left is the long s in 's.
    pattern = PATTERN.split("|", 2)[2].replace("'s|", "'[s\u017f]|")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),  # CLIP's byte table is GPT-2's
    ])
    # normalized=True: the reference finds these strings in the cleaned (lowercased) prompt.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=True) for t in (SOT, EOT)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, SOT_ID), (EOT, EOT_ID)]
    )
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(EOW, " ")])  # the reference's decode
    # Truncation leaves room for the two tokens the post-processor adds: [SOT, ids[:L-2], EOT], the reference's.
    tok.enable_truncation(context_length)
    tok.enable_padding(length=context_length, pad_id=pad_id, pad_token=list(vocab)[pad_id])
    return tok.to_str(pretty=True)


def write_tokenizer_json(path: str | os.PathLike, context_length: int, pad_id: int = 0) -> None:
    """Write a Hugging Face ``tokenizers`` file that gives :class:`ClipTokenizer`'s ids, padded and truncated to
    ``context_length`` with ``pad_id`` (truncation keeps EOT last, as the reference does).

    Its normalizer redoes the reference's cleaning with what ``tokenizers`` offers. It agrees on every prompt of
    the project's prompt sets and on every single character Python's Unicode database knows (alone and within
    words), but ftfy and ``html.unescape`` are heuristics it cannot express, so these still differ:

    - mojibake that ftfy repairs ("cafÃ©" -> "café") stays as it is;
    - HTML entities other than the common ones in ``_ENTITIES`` ("&eacute;", "&#233;") stay as text, and after a
      "<" in the prompt ftfy decodes none and straightens no quote of an entity, which this file does anyway;
    - "<start_of_text>" or "<end_of_text>" typed in a prompt becomes its id in the reference unless a symbol
      precedes it ("'<end_of_text>" is one run of symbols there); here always;
    - characters newer than Python's Unicode database, which the two lowercase and classify differently.

    The file is written to a temporary file and renamed, so readers never see a partial one.
    """
    from litetext.files import write_bytes_atomic

    write_bytes_atomic(path, _tokenizer_json(context_length, pad_id).encode("utf-8"))
