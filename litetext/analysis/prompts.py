"""Prompt anatomy: token lengths, padding and truncation per context, vocabulary use and coverage.

Definitions (every figure `litetext analyze` writes follows them; CLIP BPE, vocabulary 49,408):

- **length** n of a prompt: its BPE tokens plus the start and end tokens, before any truncation (as the
  shared data's SOURCES.md counts, and as a context must hold them). Mean, median (numpy's: the mean of the
  two middle values for an even count), p95 (the smallest length that at least 95% of prompts fit in:
  nearest-rank, an integer), max, and a histogram of n.
- at a context L, a prompt uses u = min(n, L) positions (a cut prompt keeps its first L - 2 BPE tokens and the
  end token) and carries L - u pad tokens:
  - **padding waste** = mean over prompts of (L - u) / L: the share of the context spent on pads;
  - **truncated share** = share of prompts with n > L;
  - **information density** = mean over prompts of u / L (= 1 - padding waste, by definition);
  - **tokens lost** = sum of max(n - L, 0) / sum of n: the share of all token occurrences the cut drops.
- **vocabulary**: the distinct BPE ids in the prompts' bodies (start and end tokens excluded: every prompt has
  them); frequency = occurrences over all prompts (a token twice in a prompt counts twice); the Zipf curve is
  frequency against rank; "tokens for X%" = the fewest most-frequent tokens whose occurrences add up to at
  least X% of all occurrences.
- **coverage** of a held-out set by a vocabulary V: the share of held-out token occurrences whose id is in
  V, and the share of held-out prompts whose every token is in V.

Prompts are read as `read_prompts` reads them: one a line, stripped, duplicates dropped. Per source file the
figures cover that file's distinct prompts; the overall figures cover the distinct prompts of all files
(a prompt in two files counts once).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litetext.calibration.data import read_prompts
from litetext.errors import LitetextError
from litetext.tokenizer import VOCAB_SIZE, ClipTokenizer, bytes_to_unicode, load_vocab

CONTEXTS = (8, 16, 32, 77)
COVERAGE_LEVELS = (0.9, 0.99, 1.0)


@dataclass
class Tokenized:
    """Prompts and their BPE ids (no start or end tokens)."""

    prompts: list[str]
    ids: list[list[int]]

    @property
    def lengths(self) -> np.ndarray:
        """n: BPE tokens + start + end, before truncation."""
        return np.array([len(i) + 2 for i in self.ids], dtype=np.int64)


def tokenize_prompts(prompts: list[str], tokenizer: ClipTokenizer | None = None) -> Tokenized:
    tokenizer = tokenizer or ClipTokenizer()
    ids = [tokenizer.encode(p) for p in prompts]
    empty = [p for p, i in zip(prompts, ids) if not i]
    if empty:
        raise LitetextError(f"{len(empty)} prompts are empty after cleaning (first: {empty[0]!r})")
    return Tokenized(prompts, ids)


def prompt_files(paths: list[str | Path]) -> list[Path]:
    """The .txt files behind paths (folders expand to their sorted *.txt files, as read_prompts does)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.txt"))
            if not found:
                raise LitetextError(f"no .txt prompt files in {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise LitetextError(f"prompt file {p} does not exist")
    return files


def length_stats(lengths: np.ndarray) -> dict:
    lengths = np.asarray(lengths)
    histogram = np.bincount(lengths)
    return {
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "p95": int(np.percentile(lengths, 95, method="inverted_cdf")),
        "max": int(lengths.max()),
        "min": int(lengths.min()),
        "std": float(lengths.std()),
        "histogram": {str(n): int(c) for n, c in enumerate(histogram) if c},
    }


def context_stats(lengths: np.ndarray, context: int) -> dict:
    lengths = np.asarray(lengths)
    used = np.minimum(lengths, context)
    truncated = lengths > context
    return {
        "padding_waste": float(((context - used) / context).mean()),
        "truncated_share": float(truncated.mean()),
        "truncated_prompts": int(truncated.sum()),
        "information_density": float((used / context).mean()),
        "tokens_lost": float(np.maximum(lengths - context, 0).sum() / lengths.sum()),
    }


def anatomy(lengths: np.ndarray, contexts=CONTEXTS) -> dict:
    return {"prompts": int(len(lengths)), "lengths": length_stats(lengths),
            "contexts": {str(c): context_stats(lengths, c) for c in contexts}}


def token_text(token_id: int) -> str:
    """A token id as text ("</w>" marks a word's end as a trailing space)."""
    table = _id_to_token()
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    token = table[token_id]
    if token.startswith("<") and token.endswith("_of_text>"):
        return token
    word_end = token.endswith("</w>")
    body = token[: -len("</w>")] if word_end else token
    text = bytes(decoder[c] for c in body).decode("utf-8", errors="replace")
    return text + (" " if word_end else "")


_ID_TO_TOKEN: list[str] = []


def _id_to_token() -> list[str]:
    if not _ID_TO_TOKEN:
        vocab = load_vocab()
        _ID_TO_TOKEN.extend(sorted(vocab, key=vocab.get))
    return _ID_TO_TOKEN


def vocabulary_stats(tokenized: Tokenized, top: int = 25) -> dict:
    counts = Counter(i for ids in tokenized.ids for i in ids)
    freq = np.array(sorted(counts.values(), reverse=True), dtype=np.int64)
    total = int(freq.sum())
    cumulative = np.cumsum(freq) / total
    needed = {f"{level:.0%}": int(np.searchsorted(cumulative, level - 1e-12) + 1) for level in COVERAGE_LEVELS}
    ranks = np.arange(1, len(freq) + 1)
    # Zipf exponent: least-squares slope of log frequency on log rank over the head (ranks up to 1,000), where
    # the counts are large enough for the fit to mean something.
    head = slice(0, min(1000, len(freq)))
    slope = float(np.polyfit(np.log(ranks[head]), np.log(freq[head]), 1)[0]) if len(freq) > 2 else float("nan")
    return {
        "distinct_tokens": len(counts),
        "vocabulary_size": VOCAB_SIZE,
        "vocabulary_share": len(counts) / VOCAB_SIZE,
        "occurrences": total,
        "tokens_for_coverage": needed,
        "zipf_exponent_top1000": -slope,
        "singletons": int((freq == 1).sum()),
        "top_tokens": [{"id": int(i), "text": token_text(int(i)), "count": int(c)} for i, c in counts.most_common(top)],
        "zipf_frequencies": freq.tolist(),
    }


def coverage_stats(vocabulary: set[int], holdout: Tokenized) -> dict:
    occurrences = sum(len(ids) for ids in holdout.ids)
    covered = sum(i in vocabulary for ids in holdout.ids for i in ids)
    full = sum(all(i in vocabulary for i in ids) for ids in holdout.ids)
    distinct = {i for ids in holdout.ids for i in ids}
    return {
        "prompts": len(holdout.ids),
        "occurrences": occurrences,
        "occurrence_coverage": covered / occurrences,
        "prompts_fully_covered": full / len(holdout.ids),
        "distinct_tokens": len(distinct),
        "distinct_tokens_unseen": len(distinct - vocabulary),
    }


def analyze_prompt_files(paths: list[str | Path], holdout: list[str | Path] | None = None,
                         contexts=CONTEXTS, tokenizer: ClipTokenizer | None = None) -> tuple[dict, Tokenized]:
    """Length, padding, truncation and vocabulary figures for prompt files, per file and overall; with
    `holdout`, how well the files' vocabulary covers the held-out prompts. Returns the figures and the
    tokenized overall prompts (for the embedding analysis)."""
    tokenizer = tokenizer or ClipTokenizer()
    files = prompt_files(paths)
    sources, union = [], {}
    for f in files:
        tok = tokenize_prompts(read_prompts([f]), tokenizer)
        sources.append({"name": f.name, "path": str(f), **anatomy(tok.lengths, contexts)})
        for prompt, ids in zip(tok.prompts, tok.ids):
            union.setdefault(prompt, ids)  # first occurrence wins, in file order: read_prompts(files)'s order
    overall = Tokenized(list(union), list(union.values()))
    result = {
        "overall": {"name": "all", "files": [str(f) for f in files], **anatomy(overall.lengths, contexts)},
        "sources": sources,
        "vocabulary": vocabulary_stats(overall),
        "holdout": None,
    }
    if holdout:
        held = tokenize_prompts(read_prompts(prompt_files(holdout)), tokenizer)
        vocabulary = {i for ids in overall.ids for i in ids}
        result["holdout"] = {
            "files": [str(f) for f in prompt_files(holdout)],
            **coverage_stats(vocabulary, held),
            "anatomy": anatomy(held.lengths, contexts),
            "also_in_analyzed": len(set(held.prompts) & set(overall.prompts)),
        }
    return result, overall
