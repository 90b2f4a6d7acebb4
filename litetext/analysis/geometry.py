"""Text-embedding geometry: how many dimensions of the 256 the prompts' embeddings actually use.

Embedding of a prompt: the model's text graph (`build_graph("text_encoder", ...)`, "upstream" padding: pad 0,
no attention mask) gives projected per-token features [L, 256], the features SAM3's heads consume. Pooled with
``mean`` (default): the mean over the prompt's valid tokens, start to end token inclusive (pads excluded, as the
heads mask them); or ``eot``: the end token's feature (CLIP's pooled position).

Sample: a seeded uniform sample of the analysed prompts (uniform, so it has the data's length mix); prompts
whose token ids coincide at the context are kept once (equal inputs give equal embeddings and a zero
nearest-neighbour distance).

- **PCA**: eigen-spectrum of the centred embeddings; components needed for 90 / 95 / 99% of the variance.
- **TwoNN** (Facco, d'Errico, Rodriguez & Laio 2017): with r1, r2 each point's first and second nearest-neighbour
  distances (Euclidean) and mu = r2 / r1, mu follows a Pareto law of index d. ``twonn`` fits
  -log(1 - F(mu)) = d log(mu) through the origin on the empirical distribution with the 10% largest mu
  discarded (the estimator as published); ``twonn_mle`` is the maximum-likelihood d = N / sum(log mu).
  Repeated points (distance 0) are counted once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from litetext.errors import LitetextError

POOLINGS = ("mean", "eot")
VARIANCE_LEVELS = (0.9, 0.95, 0.99)


def default_context(loaded) -> int:
    from litetext.models.presets import STUDENT

    return 16 if loaded.family == STUDENT else 32


@torch.no_grad()
def pooled_embeddings(loaded, prompts: list[str], context_length: int, pooling: str = "mean",
                      batch: int = 64) -> np.ndarray:
    """[N, D] pooled text features of `prompts` (see the module docstring)."""
    from litetext.models.graphs import build_graph, get_padding
    from litetext.tokenizer import ClipTokenizer, TruncationWarning

    if pooling not in POOLINGS:
        raise LitetextError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
    graph = build_graph("text_encoder", loaded, context_length, get_padding("upstream"))
    tokenizer = ClipTokenizer()
    out = []
    for start in range(0, len(prompts), batch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            tok = tokenizer(prompts[start : start + batch], context_length, pad_id=0)
        feats = graph(torch.from_numpy(tok.input_ids)).float()  # [B, L, D]
        lengths = torch.from_numpy(tok.lengths)
        if pooling == "eot":
            out.append(feats[torch.arange(len(lengths)), lengths - 1])
        else:
            valid = (torch.arange(context_length)[None, :] < lengths[:, None]).float()
            out.append((feats * valid[..., None]).sum(1) / valid.sum(1, keepdim=True))
    return torch.cat(out).numpy().astype(np.float64)


def pca_spectrum(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    singular = np.linalg.svd(centred, compute_uv=False)
    variance = singular**2
    ratio = variance / variance.sum()
    cumulative = np.cumsum(ratio)
    return {
        "components_for": {f"{level:.0%}": int(np.searchsorted(cumulative, level - 1e-12) + 1)
                           for level in VARIANCE_LEVELS},
        "explained_variance_ratio": ratio.tolist(),
        "cumulative_variance": cumulative.tolist(),
        "participation_ratio": float(variance.sum() ** 2 / (variance**2).sum()),
    }


def nearest_two(x: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each point's first and second nearest-neighbour Euclidean distances (itself excluded), brute force."""
    x = np.asarray(x, dtype=np.float64)
    sq = (x**2).sum(1)
    r1, r2 = np.empty(len(x)), np.empty(len(x))
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        d2 = sq[rows, None] + sq[None, :] - 2.0 * x[rows] @ x.T
        d2[np.arange(d2.shape[0]), np.arange(start, start + d2.shape[0])] = np.inf
        two = np.partition(d2, 1, axis=1)[:, :2]
        two.sort(axis=1)
        r1[rows], r2[rows] = np.sqrt(np.maximum(two[:, 0], 0)), np.sqrt(np.maximum(two[:, 1], 0))
    return r1, r2


def twonn(x: np.ndarray, discard: float = 0.1) -> dict:
    x = np.asarray(x, dtype=np.float64)
    unique = np.unique(x, axis=0)  # a repeated point would be its copy's neighbour at distance 0
    r1, r2 = nearest_two(unique)
    keep = r1 > 0
    mu = r2[keep] / r1[keep]
    n = len(mu)
    if n < 10:
        raise LitetextError(f"TwoNN needs at least 10 distinct points, got {n}")
    log_mu = np.log(mu)
    mle = float(n / log_mu.sum()) if log_mu.sum() > 0 else float("inf")
    order = np.sort(mu)
    f = np.arange(1, n + 1) / n
    kept = int(np.floor(n * (1 - discard)))
    xs, ys = np.log(order[:kept]), -np.log(1 - f[:kept])
    fit = float((xs * ys).sum() / (xs * xs).sum())
    return {"twonn": fit, "twonn_mle": mle, "points": n, "dropped_duplicates": len(x) - n,
            "discard_fraction": discard}


def embedding_geometry(loaded, prompts: list[str], sample: int = 2000, seed: int = 0, pooling: str = "mean",
                       context_length: int | None = None) -> dict:
    """PCA and TwoNN intrinsic dimension of pooled text embeddings for a seeded sample of `prompts`."""
    from litetext.tokenizer import ClipTokenizer

    context_length = context_length or default_context(loaded)
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(prompts), min(sample, len(prompts)), replace=False))
    tokenizer = ClipTokenizer()
    seen, chosen = set(), []
    for i in picked:
        ids = tuple(tokenizer.encode(prompts[i])[: context_length - 2])
        if ids not in seen:
            seen.add(ids)
            chosen.append(prompts[i])
    x = pooled_embeddings(loaded, chosen, context_length, pooling)
    return {
        "model": loaded.weights_label,
        "family": loaded.family,
        "preset": loaded.preset,
        "random_weights": loaded.is_random,
        "context_length": context_length,
        "padding": "upstream (pad 0, no attention mask)",
        "pooling": pooling,
        "sample_requested": sample,
        "sample_seed": seed,
        "sample_used": len(chosen),
        "dimension": int(x.shape[1]),
        "pca": pca_spectrum(x),
        "intrinsic_dimension": twonn(x),
    }
