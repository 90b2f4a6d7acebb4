"""Report: report.md (tables) and two plots, latency vs static memory and parity per precision.

matplotlib (the `bench` extra) draws with the Agg backend, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litetext.benchmarks.device import short_name
from litetext.errors import LitetextError
from litetext.files import save_figure_atomic, write_bytes_atomic

PARITY_FLOOR = 1e-12  # 1 - cosine and errors below this are drawn at it (log axes cannot show 0)
SHORT_MODEL = {"sam3": "SAM3 teacher", "litetext-s0": "S0", "litetext-s1": "S1", "litetext-l": "L"}
SHORT_RUNTIME = {"onnxruntime": "ORT", "torch": "torch"}
MARKERS = {"fp32": "o", "fp16": "^", "int8": "s", "bf16": "D"}
PRECISION_ORDER = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}


def model_name(record: dict[str, Any]) -> str:
    model = record.get("model") or {}
    preset = model.get("preset")
    path = (model.get("weights") or {}).get("path")
    name = SHORT_MODEL.get(preset, preset) if preset else Path(path).name if path else "?"
    text_path = record.get("text_path") or {}
    kind = text_path.get("kind")
    if kind == "pruned_text_encoder":
        return f"{name} pruned ({text_path['kept_tokens']} tokens)"
    if kind == "fixed_vocabulary":
        return f"{name} fixed vocabulary ({text_path['prompts']})"
    return name


def config_name(record: dict[str, Any], batch: bool = False) -> str:
    text = f"{model_name(record)} {SHORT_RUNTIME.get(record['runtime'], record['runtime'])} {record['precision']}"
    return f"{text} b{record['batch']}" if batch else text


def _devices(records: list[dict[str, Any]]) -> dict[str, str]:
    """Device key -> D1, D2, ... in order of appearance."""
    import json

    names: dict[str, str] = {}
    for r in records:
        key = json.dumps(r.get("device"), sort_keys=True)
        names.setdefault(key, f"D{len(names) + 1}")
    return names


def _device_key(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record.get("device"), sort_keys=True)


def _random_note(records: list[dict[str, Any]]) -> str:
    random = sum(bool((r.get("model") or {}).get("random")) for r in records)
    if not random:
        return ""
    scope = "all records" if random == len(records) else f"{random} of {len(records)} records"
    return f"weights: random ({scope}): latency and memory are real; outputs mean nothing"


def _fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def summary(parity: dict) -> dict[str, float] | None:
    """The worst figures over a record's outputs (for tables and plots), or None without parity figures."""
    outputs = (parity or {}).get("outputs")
    if not outputs:
        return None
    return {
        "cosine_mean": min(f["cosine_mean"] for f in outputs.values()),
        "cosine_worst_1pct": min(f["cosine_worst_1pct"] for f in outputs.values()),
        "cosine_min": min(f["cosine_min"] for f in outputs.values()),
        "max_abs_error": max(f["max_abs_error"] for f in outputs.values()),
    }


def _text_path_mib(record: dict[str, Any]) -> str:
    text_path = record.get("text_path")
    return _fmt(text_path["bytes"] / 2**20, ".2f") if text_path else "–"


def results_table(records: list[dict[str, Any]]) -> str:
    """The markdown table of all records (a device column when they come from several devices)."""
    header = ["model", "graph", "ctx", "runtime", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms",
              "runs", "weights MiB", "text path MiB", "RSS load MiB", "peak load MiB", "cos mean", "cos worst 1%",
              "max abs err", "status"]
    rows = []
    for r in records:
        lat = r.get("latency_ms") or {}
        mem = r.get("memory_mb") or {}
        par = summary(r.get("parity") or {})
        parity_cells = ([_fmt(par["cosine_mean"], ".7f"), _fmt(par["cosine_worst_1pct"], ".7f"),
                         _fmt(par["max_abs_error"], ".2e")] if par else
                        ["reference" if (r.get("parity") or {}).get("note") else "–", "–", "–"])
        if r.get("status") == "ok":
            status = "ok" if not (r.get("parity") or {}).get("error") else f"ok (parity failed: {r['parity']['error']})"
        else:
            status = f"failed: {r.get('error')}"
        row = [model_name(r), r["graph"], str(r.get("context_length") or "–"), r["runtime"], r["precision"], str(r["batch"]),
               _fmt(lat.get("p50")), _fmt(lat.get("p90")), _fmt(lat.get("p99")),
               f"{_fmt(lat.get('mean'))} ± {_fmt(lat.get('std'))}" if lat else "–", str(lat.get("runs", "–")),
               _fmt(mem.get("weights"), ".1f"), _text_path_mib(r), _fmt(mem.get("rss_after_load"), ".1f"),
               _fmt(mem.get("peak_rss_load"), ".1f"), *parity_cells, status.replace("|", "/")]
        rows.append((r, row))
    return _markdown_table(header, rows, _devices(records))


def pipeline_table(records: list[dict[str, Any]]) -> str:
    """Markdown table of the pipeline records (empty string when there are none): whole-bundle memory, the
    total latency and its split per graph (medians of the same timed runs)."""
    from litetext.benchmarks.pipeline import GRAPH

    rows = [r for r in records if r.get("graph") == GRAPH]
    if not rows:
        return ""
    header = ["model", "runtime", "precision", "prompts", "weights MiB", "RSS load MiB", "total p50 ms",
              "vision p50 ms", "text p50 ms", "heads p50 ms", "heads per prompt ms", "runs", "status"]
    cells = []
    for r in rows:
        mem = r.get("memory_mb") or {}
        split = r.get("split_ms") or {}
        p50 = lambda stage: (split.get(stage) or {}).get("p50")  # noqa: E731
        heads = p50("heads")
        row = [model_name(r), r["runtime"], r["precision"], str(r["batch"]), _fmt(mem.get("weights"), ".1f"),
               _fmt(mem.get("rss_after_load"), ".1f"), _fmt((r.get("latency_ms") or {}).get("p50"), ".1f"),
               _fmt(p50("vision_encoder"), ".1f"), _fmt(p50("text_encoder"), ".1f"), _fmt(heads, ".1f"),
               _fmt(None if heads is None else heads / r["batch"], ".1f"),
               str((r.get("latency_ms") or {}).get("runs", "–")),
               "ok" if r.get("status") == "ok" else f"failed: {r.get('error')}".replace("|", "/")]
        cells.append((r, row))
    return _markdown_table(header, cells, _devices(records))


def _markdown_table(header: list[str], rows: list[tuple[dict[str, Any], list[str]]], devices: dict) -> str:
    """A markdown table of (record, cells) rows, with a device column first when the records come from several
    devices (`devices`: _devices of all records)."""
    several = len(devices) > 1
    lines = ["| " + " | ".join((["device"] if several else []) + header) + " |",
             "|" + "---|" * (len(header) + several)]
    for r, row in rows:
        lines.append("| " + " | ".join(([devices[_device_key(r)]] if several else []) + row) + " |")
    return "\n".join(lines)


def markdown(records: list[dict[str, Any]]) -> str:
    devices = _devices(records)
    lines = ["# litetext benchmark", ""]
    note = _random_note(records)
    if note:
        lines += [f"> **{note}**", ""]
    lines += ["Latency is per batch in milliseconds (every timed run kept, nothing trimmed). Memory in MiB: "
              "weights = static size of the graph's weights; text path = what a bundle's text path holds on the "
              "device (text encoder + tokenizer.json, or a fixed vocabulary's features + list); RSS/peak = "
              "resident memory added by loading the graph in a fresh process (after / peak during the load; after = "
              "anonymous memory plus the file pages the load added: library pages the kernel dropped during a "
              "large load are not subtracted, which once made it negative). "
              "Parity: worst output of the graph against the reference (text features per valid token; a pruned "
              "text encoder: its covered prompts, the record has the rest).", ""]
    lines += ["## Devices", ""]
    by_key = {_device_key(r): r.get("device") or {} for r in records}
    for key, tag in devices.items():
        d = by_key[key]
        tools = d.get("tools", {})
        versions = ", ".join(f"{k} {v}" for k, v in tools.items() if k in ("torch", "onnxruntime", "coremltools", "tensorrt"))
        lines.append(f"- **{tag}**: {d.get('cpu')} ({d.get('cpu_cores_usable')} usable cores, "
                     f"{d.get('memory_gib')} GiB), accelerator {d.get('accelerator')}, {d.get('os')}, "
                     f"python {d.get('python')}, {versions}")
    lines += [""]
    lines += ["## Results", "", results_table(records)]
    pipeline = pipeline_table(records)
    if pipeline:
        lines += ["", "## Whole pipeline: one image + N prompts", "",
                  "Vision encoder once (batch 1), text encoder once on the N prompts as one batch, heads on the N "
                  "prompts as one batch (Core ML: one at a time), as `litetext predict` runs them. Latency per run; "
                  "the split is the median of each graph over the same timed runs. Weights = the three graphs' "
                  "files; RSS = resident memory added by loading all three in a fresh process.", "", pipeline]
    heads = [r for r in records if (r.get("parity") or {}).get("instances")]
    if heads:
        lines += ["", "## Heads: instance agreement with the reference", "",
                  "| model | runtime | precision | batch | threshold | reference / candidate instances | matched "
                  "| lost | gained | mask IoU mean | box IoU mean | score max abs err |", "|" + "---|" * 12]
        for r in heads:
            a = r["parity"]["instances"]
            lines.append(
                f"| {model_name(r)} | {r['runtime']} | {r['precision']} | {r['batch']} | {a['threshold']} | "
                f"{a['reference_instances']} / {a['candidate_instances']} | {a['matched']} | {a['lost']} | "
                f"{a['gained']} | {_fmt(a['mask_iou_mean'], '.4f')} | {_fmt(a['box_iou_mean'], '.4f')} | "
                f"{_fmt(a['score_max_abs_error'], '.2e')} |")
    lines += ["", "Plots: `latency_vs_memory.png`, `parity.png`.", ""]
    return "\n".join(lines)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise LitetextError("reports need matplotlib: pip install 'litetext[bench]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _subtitle(records: list[dict[str, Any]]) -> str:
    names = sorted({short_name(r.get("device") or {}) for r in records})
    text = "device: " + "; ".join(names)
    note = _random_note(records)
    return f"{text}\n{note}" if note else text


def _plain_log_ticks(ax) -> None:
    """Log axes labelled with plain numbers (0.1, 3, 200); minor ticks labelled too when an axis spans less
    than about a decade, so every axis shows some numbers."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:.0f}" if v >= 100 else f"{v:.3g}")
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain if lo > 0 and hi / lo < 20 else NullFormatter())
        axis.set_tick_params(which="minor", labelsize=7)


def plot_latency_vs_memory(records: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    from matplotlib.lines import Line2D

    ok = [r for r in records if r.get("status") == "ok" and (r.get("memory_mb") or {}).get("weights")]
    graphs = list(dict.fromkeys(r["graph"] for r in ok)) or ["(none)"]
    batches = sorted({r["batch"] for r in ok}) or [1]
    several = len(_devices(records)) > 1
    devices = _devices(records)
    models = list(dict.fromkeys(model_name(r) for r in ok))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    fig, axes = plt.subplots(len(batches), len(graphs), figsize=(max(9.0, 6.5 * len(graphs)), 4.8 * len(batches) + 1),
                             squeeze=False, layout="constrained")
    for row, batch in enumerate(batches):
        for col, graph in enumerate(graphs):
            ax = axes[row][col]
            points = [r for r in ok if r["graph"] == graph and r["batch"] == batch]
            for r in points:
                x, y = r["memory_mb"]["weights"], r["latency_ms"]["p50"]
                color = colors[model_name(r)]
                hollow = r["runtime"] == "torch"
                ax.scatter(x, y, s=60, marker=MARKERS.get(r["precision"], "x"), zorder=3,
                           facecolor="none" if hollow else color, edgecolor=color if hollow else "black",
                           linewidth=1.5 if hollow else 0.5)
                label = config_name(r) + (f" [{devices[_device_key(r)]}]" if several else "")
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{graph}, batch {batch}", fontsize=10)
            ax.set_xlabel("static memory: weights (MiB, log)")
            ax.set_ylabel(f"latency p50 per batch of {batch} (ms, log)")
            if not points:
                ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
            ax.margins(x=0.4, y=0.25)
            _plain_log_ticks(ax)
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[m], label=m) for m in models]
    precisions = list(dict.fromkeys(r["precision"] for r in ok))
    handles += [Line2D([], [], marker=MARKERS.get(p, "x"), linestyle="", color="grey", label=p) for p in precisions]
    if any(r["runtime"] == "torch" for r in ok):
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="grey",
                              label="hollow: eager PyTorch"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    fig.suptitle("Latency (p50) vs static memory, per configuration\n" + _subtitle(records), fontsize=10)
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_parity(records: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    from matplotlib.lines import Line2D

    rows = [(r, summary(r.get("parity") or {})) for r in records if r.get("status") == "ok"]
    rows = [(r, s) for r, s in rows if s]
    graphs = list(dict.fromkeys(r["graph"] for r, _ in rows)) or ["(none)"]
    precisions = sorted({r["precision"] for r, _ in rows}, key=lambda p: (PRECISION_ORDER.get(p, 9), p))
    colors = {p: plt.cm.Set1(i % 9) for i, p in enumerate(precisions)}
    several = len(_devices(records)) > 1
    devices = _devices(records)
    widest = max([sum(r["graph"] == g for r, _ in rows) for g in graphs] + [1])
    fig, axes = plt.subplots(2, len(graphs), figsize=(max(9.0, len(graphs) * max(5.0, 0.45 * widest + 2.5)), 8.5),
                             squeeze=False, layout="constrained")
    floor = lambda v: max(v, PARITY_FLOOR)  # noqa: E731
    for col, graph in enumerate(graphs):
        mine = sorted((x for x in rows if x[0]["graph"] == graph),
                      key=lambda x: (PRECISION_ORDER.get(x[0]["precision"], 9), x[0]["precision"], model_name(x[0]),
                                     x[0]["runtime"], x[0]["batch"]))
        labels = [config_name(r, batch=True) + (f" [{devices[_device_key(r)]}]" if several else "") for r, _ in mine]
        top, bottom = axes[0][col], axes[1][col]
        for i, (r, s) in enumerate(mine):
            c = colors[r["precision"]]
            top.scatter(i, floor(1 - s["cosine_mean"]), color=c, marker="o", s=45, zorder=3)
            top.scatter(i, floor(1 - s["cosine_worst_1pct"]), color=c, marker="v", s=45, zorder=3)
            bottom.bar(i, floor(s["max_abs_error"]), color=c, edgecolor="black", linewidth=0.5)
        for ax in (top, bottom):
            ax.set_yscale("log")
            ax.grid(True, axis="y", which="both", alpha=0.3)
            ax.set_xticks(range(len(mine)))
            ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
            ax.set_xlim(-0.6, max(len(mine), 1) - 0.4)  # the same slots above and below: markers over their bars
            if not mine:
                ax.text(0.5, 0.5, "no parity figures", ha="center", va="center", transform=ax.transAxes)
        top.set_ylim(PARITY_FLOOR / 3, 1)
        top.set_title(f"{graph}: parity vs reference (worst output)", fontsize=10)
        top.set_ylabel(f"1 − cosine (log; < {PARITY_FLOOR:g} drawn at it)")
        bottom.set_ylabel("max abs error (log)")
    handles = [Line2D([], [], marker="s", linestyle="", color=colors[p], label=p) for p in precisions]
    handles += [Line2D([], [], marker="o", linestyle="", color="grey", label="cosine mean"),
                Line2D([], [], marker="v", linestyle="", color="grey", label="cosine worst 1%")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Parity per precision (lower is closer to the reference)\n" + _subtitle(records), fontsize=10)
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path


def write_report(records: list[dict[str, Any]], out: str | Path) -> dict[str, Path]:
    """report.md, latency_vs_memory.png and parity.png in `out`; returns their paths."""
    if not records:
        raise LitetextError("no records to report")
    _pyplot()  # fail before writing anything when matplotlib is missing
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md"}
    write_bytes_atomic(paths["markdown"], markdown(records).encode("utf-8"))
    paths["latency_vs_memory"] = plot_latency_vs_memory(records, out / "latency_vs_memory.png")
    paths["parity"] = plot_parity(records, out / "parity.png")
    return paths
