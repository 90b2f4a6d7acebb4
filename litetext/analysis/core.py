"""`analyze`: every figure of the prompt analysis as one JSON-ready dict."""

from __future__ import annotations

from pathlib import Path

from litetext.analysis.prompts import CONTEXTS, analyze_prompt_files
from litetext.analysis.report import PAPER

SCHEMA = "litetext.analysis/1"

DEFINITIONS = {
    "length": "BPE tokens + start + end token, before truncation",
    "p95": "smallest length that at least 95% of prompts fit in (nearest rank)",
    "padding_waste": "mean over prompts of (L - min(n, L)) / L",
    "truncated_share": "share of prompts with n > L (cut to the first L - 2 BPE tokens + the end token)",
    "information_density": "mean over prompts of min(n, L) / L (= 1 - padding_waste)",
    "tokens_lost": "sum of max(n - L, 0) / sum of n",
    "vocabulary": "distinct BPE ids in prompt bodies (start and end tokens excluded); occurrences counted with "
                  "repetition",
    "tokens_for_coverage": "fewest most-frequent tokens whose occurrences reach the level",
    "coverage": "share of held-out token occurrences in the analysed vocabulary; share of held-out prompts whose "
                "every token is in it",
    "embedding": "text graph features [L, 256] (upstream padding), pooled by the mean over valid tokens (start "
                 "to end) or the end token's feature",
    "pca": "components of the centred embeddings needed for 90/95/99% of the variance",
    "twonn": "Facco et al. 2017: fit of -log(1-F(mu)) = d log(mu), mu = r2/r1, 10% largest mu discarded; "
             "twonn_mle = N / sum(log mu)",
}


def analyze(prompts: list[str | Path], holdout: list[str | Path] | None = None, loaded=None, sample: int = 2000,
            seed: int = 0, pooling: str = "mean", context_length: int | None = None,
            contexts=CONTEXTS, progress=lambda message: None) -> dict:
    """Analyse prompt files or folders; with `holdout`, measure their vocabulary's coverage of held-out
    prompts; with `loaded` (a LoadedModel), the geometry of its pooled text embeddings on `sample` prompts."""
    progress("tokenizing prompts")
    figures, overall = analyze_prompt_files(prompts, holdout, contexts)
    result = {
        "schema": SCHEMA,
        "tokenizer": {"name": "CLIP BPE (open_clip SimpleTokenizer ids)", "vocabulary_size": 49_408,
                      "start_and_end_counted": True},
        "definitions": DEFINITIONS,
        "inputs": {"prompts": [str(p) for p in prompts], "holdout": [str(p) for p in holdout or []]},
        **figures,
        "geometry": None,
        "paper": PAPER,
    }
    if loaded is not None:
        from litetext.analysis.geometry import embedding_geometry

        progress(f"embedding {min(sample, len(overall.prompts))} prompts with {loaded.weights_label}")
        result["geometry"] = embedding_geometry(loaded, overall.prompts, sample, seed, pooling, context_length)
    return result
