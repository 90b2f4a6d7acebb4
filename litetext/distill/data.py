"""Prompts as the student sees them, the seeded order they are drawn in, and their word-shuffled twins.

Every random choice is a function of (seed, step): which prompts make a batch, and how their words are
shuffled. A run resumed from a checkpoint at step k therefore draws exactly what an uninterrupted run draws
from step k on, with no random-generator state to save.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np

from litetext.tokenizer import ClipTokenizer, TruncationWarning

PAD_ID = 0  # "upstream" padding: how the students were trained and are exported by default


@dataclass(frozen=True, eq=False)
class Tokens:
    input_ids: np.ndarray  # int64 [N, L], [SOT, ids..., EOT, 0...], cut like the reference when too long
    lengths: np.ndarray  # int64 [N], valid tokens (SOT..EOT) after truncation
    truncated: np.ndarray  # bool [N], prompts the context cut

    def valid_mask(self, rows=slice(None)) -> np.ndarray:
        return np.arange(self.input_ids.shape[1]) < self.lengths[rows, None]


def tokenize(prompts: list[str], context_length: int, tokenizer: ClipTokenizer | None = None) -> Tokens:
    """Token ids at the student's context. Prompts longer than the context keep their first L - 2 BPE tokens
    and the end token, as the reference tokenizer cuts them (the caller reports how many)."""
    tokenizer = tokenizer or _shared_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        batch = tokenizer(prompts, context_length, pad_id=PAD_ID)
    return Tokens(batch.input_ids, batch.lengths, batch.truncated)


@cache
def _shared_tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def prompts_digest(prompts: list[str]) -> str:
    """sha256 of the prompts in order (one per line)."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(p.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


class BatchOrder:
    """Global batch `step` -> prompt indices: epochs are seeded permutations of all prompts, laid end to end,
    and batch s is positions [s * B, (s + 1) * B) of that stream."""

    def __init__(self, count: int, batch: int, seed: int):
        self.count, self.batch, self.seed = count, batch, seed
        self._epochs: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            if len(self._epochs) > 4:
                self._epochs.clear()
            self._epochs[epoch] = np.random.default_rng([self.seed, 0, epoch]).permutation(self.count)
        return self._epochs[epoch]

    def indices(self, step: int) -> np.ndarray:
        positions = np.arange(step * self.batch, (step + 1) * self.batch)
        return np.array([self._perm(int(p // self.count))[p % self.count] for p in positions], dtype=np.int64)


def shuffle_words(prompt: str, seed: int, step: int, position: int) -> str | None:
    """The prompt's whitespace-separated words in another order (seeded by seed, step and position in the
    batch), or None when it has a single word. A shuffle that happens to restore the original order is
    reversed instead, so the twin always differs."""
    words = prompt.split()
    if len(words) < 2:
        return None
    order = np.random.default_rng([seed, 1, step, position]).permutation(len(words))
    if (order == np.arange(len(words))).all():
        order = order[::-1]
    return " ".join(words[i] for i in order)
