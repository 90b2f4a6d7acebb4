"""The bench report as a person reads it: memory figures that cannot go negative for the wrong reason, and a
parity plot whose markers stand over their bars."""

import json

import pytest

from conftest import REPO
from litetext.benchmarks.probe import MIB, load_figures


def test_dropped_library_pages_do_not_make_resident_memory_negative():
    """A torch load of 1.1 GiB during which the kernel drops 300 MiB of library code pages: the load holds
    200 MiB of weights, not -100 MiB."""
    before = {"VmRSS": 500 * MIB, "VmHWM": 500 * MIB, "RssAnon": 200 * MIB, "RssFile": 300 * MIB}
    after = {"VmRSS": 400 * MIB, "VmHWM": 1600 * MIB, "RssAnon": 400 * MIB, "RssFile": 0}
    figures = load_figures(before, after)
    assert figures["rss_after_load"] == 200 and figures["peak_rss_load"] == 1100
    assert figures["rss_anon_after_load"] == 200 and figures["rss_file_after_load"] == -300
    assert "300.0 MiB of file pages" in figures["file_pages_dropped"]


def test_an_mmapped_model_counts():
    before = {"VmRSS": 100 * MIB, "VmHWM": 100 * MIB, "RssAnon": 60 * MIB, "RssFile": 40 * MIB}
    after = {"VmRSS": 270 * MIB, "VmHWM": 280 * MIB, "RssAnon": 70 * MIB, "RssFile": 200 * MIB}
    assert load_figures(before, after)["rss_after_load"] == 170 and "file_pages_dropped" not in load_figures(before, after)


def test_parity_markers_stand_over_their_bars_with_labels(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from litetext.benchmarks.report import plot_parity

    records = json.loads((REPO / "benchmarks" / "results" / "teacher_vs_students.json").read_text())
    records = records["records"] if isinstance(records, dict) else records
    saved = []
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), real_savefig(fig, *a, **k)))
    plot_parity(records, tmp_path / "parity.png")
    (fig,) = saved
    panels = [ax for ax in fig.axes if ax.get_ylabel()]
    tops = [ax for ax in panels if "cosine" in ax.get_ylabel()]
    bottoms = [ax for ax in panels if "max abs error" in ax.get_ylabel()]
    assert tops and len(tops) == len(bottoms)
    for top, bottom in zip(tops, bottoms):
        assert top.get_xlim() == bottom.get_xlim()
        bars = sorted(p.get_x() + p.get_width() / 2 for p in bottom.patches)
        markers = sorted({float(x) for c in top.collections for x, _ in c.get_offsets()})
        assert markers == pytest.approx(bars)
        top_labels = [t.get_text() for t in top.get_xticklabels()]
        assert top_labels and all(top_labels) and top_labels == [t.get_text() for t in bottom.get_xticklabels()]
