"""The analysis report: PNG plots and a markdown summary of the figures `analyze` computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from litetext.analysis.prompts import COVERAGE_LEVELS
from litetext.files import save_figure_atomic, write_bytes_atomic

# The SAM3-LiteText paper's prompt analysis (arXiv 2602.12173): 404,796 prompts from RF100-VL, SA-Co/Gold,
# SA-Co/Silver, SA-Co/VEval, LVIS and RefCOCO; start and end tokens counted.
PAPER = {
    "source": "SAM3-LiteText (arXiv 2602.12173), prompt analysis",
    "prompts": 404_796,
    "datasets": ["RF100-VL", "SA-Co/Gold", "SA-Co/Silver", "SA-Co/VEval", "LVIS", "RefCOCO"],
    "mean_length": 7.9,
    "contexts": {
        "32": {"padding_waste": 0.755, "truncated_share": 0.001},
        "16": {"padding_waste": 0.520, "truncated_share": 0.050},
        "8": {"padding_waste": 0.200, "truncated_share": 0.285},
    },
    "intrinsic_dimension": "about 16 to 19 of 256",
}


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)


def _plt():
    try:
        import matplotlib
    except ImportError:
        from litetext.errors import LitetextError

        raise LitetextError("--report draws plots with matplotlib: pip install 'litetext[bench]'") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_lengths(result: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    hist = {int(k): v for k, v in result["overall"]["lengths"]["histogram"].items()}
    total = sum(hist.values())
    xs = np.arange(min(hist), max(hist) + 1)
    ax.bar(xs, [hist.get(int(x), 0) / total for x in xs], width=0.9, color="#4477aa", label="analysed prompts")
    holdout = result.get("holdout")
    if holdout:
        h = {int(k): v for k, v in holdout["anatomy"]["lengths"]["histogram"].items()}
        ht = sum(h.values())
        hx = np.arange(min(h), max(h) + 1)
        ax.step(hx, [h.get(int(x), 0) / ht for x in hx], where="mid", color="#cc6677", label="held-out prompts")
    for c in (8, 16, 32):
        ax.axvline(c + 0.5, color="grey", lw=0.8, ls="--")
        ax.text(c + 0.7, ax.get_ylim()[1] * 0.9, f"L={c}", color="grey", fontsize=8)
    ax.set_xlabel("tokens per prompt (start and end tokens included)")
    ax.set_ylabel("share of prompts")
    ax.set_title(f"Prompt lengths (mean {result['overall']['lengths']['mean']:.2f})")
    ax.legend()
    _save(fig, path)


def plot_contexts(result: dict, path: Path) -> None:
    from litetext.analysis.prompts import context_stats

    plt = _plt()
    hist = {int(k): v for k, v in result["overall"]["lengths"]["histogram"].items()}
    lengths = np.repeat(np.array(list(hist)), list(hist.values()))
    contexts = np.arange(4, 78)
    stats = [context_stats(lengths, int(c)) for c in contexts]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(contexts, [100 * s["padding_waste"] for s in stats], color="#4477aa", label="padding waste (ours)")
    ax.plot(contexts, [100 * s["truncated_share"] for s in stats], color="#cc6677", label="truncated prompts (ours)")
    for c, p in PAPER["contexts"].items():
        ax.scatter([int(c)], [100 * p["padding_waste"]], marker="x", color="#4477aa", zorder=3)
        ax.scatter([int(c)], [100 * p["truncated_share"]], marker="x", color="#cc6677", zorder=3)
    ax.scatter([], [], marker="x", color="black", label="paper (other prompt sources)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([4, 8, 16, 32, 64, 77], labels=["4", "8", "16", "32", "64", "77"])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("%")
    ax.set_title("Padding and truncation against context length")
    ax.legend()
    _save(fig, path)


def plot_zipf(result: dict, path: Path) -> None:
    plt = _plt()
    freq = np.array(result["vocabulary"]["zipf_frequencies"])
    ranks = np.arange(1, len(freq) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.loglog(ranks, freq, color="#4477aa", label="token frequency")
    s = result["vocabulary"]["zipf_exponent_top1000"]
    ax.loglog(ranks, freq[0] * ranks ** (-s), color="grey", ls="--", label=f"rank^-{s:.2f} (fit, top 1,000)")
    for n, (level, k) in enumerate(result["vocabulary"]["tokens_for_coverage"].items()):
        ax.axvline(k, color="#cc6677", lw=0.7, ls=":")
        ax.text(k, freq.max() / 3 ** (n + 1), f" {level}: {k:,}", color="#cc6677", fontsize=8, ha="right")
    ax.set_xlabel("rank")
    ax.set_ylabel("occurrences")
    ax.set_title(f"Zipf curve: {result['vocabulary']['distinct_tokens']:,} distinct tokens of 49,408")
    ax.legend()
    _save(fig, path)


def plot_pca(geometry: dict, path: Path) -> None:
    plt = _plt()
    cum = np.array(geometry["pca"]["cumulative_variance"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(cum) + 1), 100 * cum, color="#4477aa")
    for level, k in geometry["pca"]["components_for"].items():
        ax.axvline(k, color="grey", lw=0.7, ls=":")
        ax.text(k, 50, f" {level}: {k}", fontsize=8, rotation=90)
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative variance (%)")
    label = "RANDOM weights" if geometry["random_weights"] else "trained weights"
    ax.set_title(f"PCA of pooled text embeddings ({geometry['preset'] or geometry['family']}, {label})")
    _save(fig, path)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(result: dict) -> str:
    o = result["overall"]
    lines = ["# Prompt anatomy", ""]
    lines += [f"Analysed: {o['prompts']:,} distinct prompts from {len(result['sources'])} files. "
              "Tokenizer: CLIP BPE (vocabulary 49,408); lengths count the start and end tokens. "
              "Definitions: `litetext/analysis/prompts.py`.", ""]
    lines += ["## Lengths", "", "| source | prompts | mean | median | p95 | max | fits 16 | fits 32 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in [*result["sources"], o]:
        ln, cx = s["lengths"], s["contexts"]
        fits = {c: _pct(1 - cx[c]["truncated_share"]) if c in cx else "" for c in ("16", "32")}
        lines.append(f"| {s['name']} | {s['prompts']:,} | {ln['mean']:.2f} | {ln['median']:g} | {ln['p95']} | "
                     f"{ln['max']} | {fits['16']} | {fits['32']} |")
    lines += ["", "## Padding and truncation (all prompts) against the paper", "",
              "| context | padding waste | truncated prompts | information density | tokens lost | "
              "paper padding | paper truncated |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for c, s in o["contexts"].items():
        p = PAPER["contexts"].get(c, {})
        pp = _pct(p["padding_waste"]) if p else "-"
        pt = f"{100 * p['truncated_share']:.1f}%" if p else "-"
        lines.append(f"| {c} | {_pct(s['padding_waste'])} | {100 * s['truncated_share']:.2f}% "
                     f"({s['truncated_prompts']:,}) | {_pct(s['information_density'])} | {100 * s['tokens_lost']:.2f}% "
                     f"| {pp} | {pt} |")
    lines += ["", f"Mean length here {o['lengths']['mean']:.2f} tokens; the paper's {PAPER['mean_length']} over "
              f"{PAPER['prompts']:,} prompts of other sources ({', '.join(PAPER['datasets'])}).", ""]
    v = result["vocabulary"]
    cov = ", ".join(f"{k}: {n:,}" for k, n in v["tokens_for_coverage"].items())
    lines += ["## Vocabulary", "",
              f"{v['distinct_tokens']:,} distinct tokens ({_pct(v['vocabulary_share'])} of 49,408) in "
              f"{v['occurrences']:,} occurrences; {v['singletons']:,} occur once. Most frequent tokens covering "
              f"{cov}. Zipf exponent (top 1,000 ranks) {v['zipf_exponent_top1000']:.2f}.", "",
              "Most frequent: " + ", ".join(f"`{t['text'].strip()}` {t['count']:,}" for t in v["top_tokens"][:15]),
              ""]
    h = result.get("holdout")
    if h:
        lines += ["## Held-out coverage", "",
                  f"{h['prompts']:,} held-out prompts ({len(h['files'])} files): "
                  f"{_pct(h['occurrence_coverage'])} of their {h['occurrences']:,} token occurrences and "
                  f"{_pct(h['prompts_fully_covered'])} of the prompts are fully covered by the analysed prompts' "
                  f"vocabulary; {h['distinct_tokens_unseen']:,} of their {h['distinct_tokens']:,} distinct tokens "
                  f"never occur in it. Held-out mean length {h['anatomy']['lengths']['mean']:.2f}; truncated at 16: "
                  f"{_pct(h['anatomy']['contexts']['16']['truncated_share'])}.", ""]
    g = result.get("geometry")
    if g:
        pca, idim = g["pca"], g["intrinsic_dimension"]
        warn = (" **These are random weights: the figures describe an untrained network, not what the trained "
                "model's embeddings use.**" if g["random_weights"] else "")
        lines += ["## Embedding geometry", "",
                  f"Model: {g['model']} ({g['preset'] or g['family']}), context {g['context_length']}, pooling "
                  f"`{g['pooling']}` over {g['sample_used']:,} prompts (seed {g['sample_seed']}), "
                  f"{g['dimension']} dimensions.{warn}", "",
                  "| PCA 90% | PCA 95% | PCA 99% | participation ratio | TwoNN | TwoNN (MLE) |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {pca['components_for']['90%']} | {pca['components_for']['95%']} | "
                  f"{pca['components_for']['99%']} | {pca['participation_ratio']:.1f} | {idim['twonn']:.1f} | "
                  f"{idim['twonn_mle']:.1f} |", "",
                  f"The paper reports an intrinsic dimension of {PAPER['intrinsic_dimension']} for trained "
                  "embeddings.", ""]
    lines += ["## Plots", "", "![lengths](lengths.png)", "", "![contexts](padding_truncation.png)", "",
              "![zipf](zipf.png)", ""]
    if g:
        lines += ["![pca](pca.png)", ""]
    return "\n".join(lines)


def write_report(result: dict, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "lengths.png", folder / "padding_truncation.png", folder / "zipf.png"]
    plot_lengths(result, written[0])
    plot_contexts(result, written[1])
    plot_zipf(result, written[2])
    if result.get("geometry"):
        written.append(folder / "pca.png")
        plot_pca(result["geometry"], written[-1])
    write_bytes_atomic(folder / "report.md", (markdown(result) + "\n").encode("utf-8"))
    written.append(folder / "report.md")
    return written


__all__ = ["PAPER", "COVERAGE_LEVELS", "markdown", "write_report"]
