"""Prompt anatomy: lengths, padding, truncation, vocabulary, coverage and embedding geometry, checked against
hand counts and against an independent count of the shared calibration prompts."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from click.testing import CliRunner

from litetext.analysis import analyze
from litetext.analysis.cli import analyze as analyze_command
from litetext.analysis.geometry import embedding_geometry, pca_spectrum, pooled_embeddings, twonn
from litetext.analysis.prompts import context_stats, length_stats


@pytest.fixture(scope="module")
def calib_run(shared, tmp_path_factory):
    """`litetext analyze` on the calibration prompts, held-out coverage of the eval prompts, JSON and report."""
    out = tmp_path_factory.mktemp("analysis")
    result = CliRunner().invoke(analyze_command, [str(shared / "prompts" / "calib"), "--holdout",
                                                  str(shared / "prompts" / "eval"), "--json", str(out / "a.json"),
                                                  "--report", str(out / "report")])
    assert result.exit_code == 0, result.output
    return json.loads((out / "a.json").read_text()), out, result.output


def independent_lengths(folder) -> list[int]:
    """Token counts by another route: plain file reading and deduplication, then the tokenizer's batch call at
    context 77 (longer than any prompt here: nothing is cut), whose lengths include the start and end tokens.
    A seeded sample of 2,000 is also counted by the Rust `tokenizers` library running the tokenizer.json
    litetext ships (its own normalizer and BPE; all 66k would take it 10 s here), which must agree."""
    from tokenizers import Tokenizer

    from litetext.tokenizer import ClipTokenizer, _tokenizer_json

    prompts: dict[str, None] = {}
    for path in sorted(folder.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompts[line.strip()] = None
    prompts = list(prompts)
    lengths = ClipTokenizer()(prompts, 77).lengths.tolist()
    rust = Tokenizer.from_str(_tokenizer_json(77, 0))
    rust.no_truncation()
    rust.no_padding()
    sample = np.random.default_rng(0).choice(len(prompts), 2000, replace=False)
    assert [len(e.ids) for e in rust.encode_batch([prompts[i] for i in sample])] == [lengths[i] for i in sample]
    return lengths


def test_independent_count_agrees_on_calib(calib_run, shared):
    result, _, _ = calib_run
    lengths = independent_lengths(shared / "prompts" / "calib")
    overall = result["overall"]
    assert overall["prompts"] == len(lengths) == 66_436
    assert overall["lengths"]["mean"] == pytest.approx(sum(lengths) / len(lengths), abs=1e-12)
    for context in (32, 16, 8):
        pads = sum(max(context - n, 0) / context for n in lengths) / len(lengths)
        cut = sum(n > context for n in lengths)
        figures = overall["contexts"][str(context)]
        assert figures["padding_waste"] == pytest.approx(pads, abs=1e-12)
        assert figures["truncated_prompts"] == cut
        assert figures["truncated_share"] == pytest.approx(cut / len(lengths), abs=1e-15)
        assert figures["information_density"] == pytest.approx(1 - pads, abs=1e-12)
    # the figures docs/analysis.md quotes
    assert round(overall["lengths"]["mean"], 2) == 6.08
    assert [round(100 * overall["contexts"][c]["padding_waste"], 1) for c in ("32", "16", "8")] == [81.0, 62.0, 27.2]
    assert [overall["contexts"][c]["truncated_prompts"] for c in ("32", "16", "8")] == [1, 47, 7829]


def test_calib_report_and_vocabulary(calib_run):
    result, out, output = calib_run
    v = result["vocabulary"]
    assert v["distinct_tokens"] == 12_300 and v["vocabulary_share"] == pytest.approx(12_300 / 49_408)
    assert v["tokens_for_coverage"] == {"90%": 2839, "99%": 9590, "100%": 12300}
    assert sum(v["zipf_frequencies"]) == v["occurrences"] and v["zipf_frequencies"][0] == v["top_tokens"][0]["count"]
    assert [t["text"] for t in v["top_tokens"][:2]] == ["the ", "a "]
    h = result["holdout"]
    assert h["prompts"] == 15_560 and round(100 * h["occurrence_coverage"], 2) == 96.76
    assert round(100 * h["prompts_fully_covered"], 2) == 75.94
    by_name = {s["name"]: s for s in result["sources"]}
    assert by_name["coco_80_names.txt"]["prompts"] == 80
    assert by_name["a2d_sentences_queries.txt"]["contexts"]["16"]["truncated_share"] == pytest.approx(0.005, abs=1e-3)
    assert result["geometry"] is None and result["paper"]["contexts"]["16"]["truncated_share"] == 0.05
    for name in ("lengths.png", "padding_truncation.png", "zipf.png", "report.md"):
        assert (out / "report" / name).stat().st_size > 1000, name
    report = (out / "report" / "report.md").read_text()
    assert "| 16 | 62.0% | 0.07% (47) |" in report and "96.8% of their 124,483 token occurrences" in report
    assert "66,436 prompts: mean 6.08 tokens" in output


def test_hand_counts(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    long = " ".join(["cat"] * 18)  # 18 BPE tokens: 20 with start and end
    a.write_text(f"cat\ndog\na red car\n{long}\ncat\n")  # the repeated "cat" counts once
    b.write_text("cat\nblue bird\n")
    result = analyze([a, b], holdout=[tmp_path / "b.txt"])
    # lengths: cat 3, dog 3, a red car 5, long 20 (file a); blue bird 4 (new in b)
    assert [s["prompts"] for s in result["sources"]] == [4, 2]
    o = result["overall"]
    assert o["prompts"] == 5 and o["lengths"]["histogram"] == {"3": 2, "4": 1, "5": 1, "20": 1}
    assert o["lengths"]["mean"] == pytest.approx(35 / 5) and o["lengths"]["p95"] == 20 and o["lengths"]["median"] == 4
    c8 = o["contexts"]["8"]
    assert c8["padding_waste"] == pytest.approx((5 + 5 + 4 + 3 + 0) / 8 / 5)
    assert c8["truncated_prompts"] == 1 and c8["tokens_lost"] == pytest.approx(12 / 35)
    assert o["contexts"]["16"]["information_density"] == pytest.approx((3 + 3 + 5 + 16 + 4) / 16 / 5)
    v = result["vocabulary"]
    # tokens: cat x19 (1 + 18), dog, a, red, car, blue, bird -> 7 distinct, 25 occurrences
    assert v["distinct_tokens"] == 7 and v["occurrences"] == 25
    assert v["tokens_for_coverage"] == {"90%": 5, "99%": 7, "100%": 7}  # 19+1+1+1+1 = 23 >= 22.5 of 25
    assert result["holdout"]["occurrence_coverage"] == 1.0


def test_length_and_context_stats_edges():
    stats = length_stats(np.array([3, 3, 4, 10]))
    assert stats["median"] == 3.5 and stats["p95"] == 10 and stats["max"] == 10
    c = context_stats(np.array([3, 8, 9]), 8)
    assert c["truncated_prompts"] == 1 and c["padding_waste"] == pytest.approx(5 / 8 / 3)
    assert c["tokens_lost"] == pytest.approx(1 / 20)


def test_pca_and_twonn_on_known_geometry():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(256, 5)))[0].T  # a 5-dimensional subspace of R^256
    x = rng.normal(size=(1500, 5)) * np.array([5, 4, 3, 2, 1]) @ basis + 1e-4 * rng.normal(size=(1500, 256))
    pca = pca_spectrum(x)
    # variances 25, 16, 9, 4, 1 of 55: cumulative 45%, 75%, 91%, 98%, 100%
    assert pca["components_for"] == {"90%": 3, "95%": 4, "99%": 5}
    cube = rng.uniform(size=(2000, 3)) @ np.linalg.qr(rng.normal(size=(50, 3)))[0].T  # a 3-d cube in R^50
    estimate = twonn(cube)
    assert 2.5 < estimate["twonn"] < 3.3 and 2.5 < estimate["twonn_mle"] < 3.3  # 2.77 / 2.79: edges bias it down
    assert twonn(np.vstack([cube, cube[:5]]))["dropped_duplicates"] == 5  # an equal point would have r1 = 0


def test_embedding_geometry_with_a_model(tiny_s0):
    import torch

    from litetext.models.graphs import build_graph, get_padding
    from litetext.tokenizer import ClipTokenizer

    prompts = ["a cat", "the red car on the left", "dog", "two people walking a dog in the park"]
    mean = pooled_embeddings(tiny_s0, prompts, 16, "mean")
    eot = pooled_embeddings(tiny_s0, prompts, 16, "eot")
    tok = ClipTokenizer()(prompts, 16)
    with torch.no_grad():
        feats = build_graph("text_encoder", tiny_s0, 16, get_padding("upstream"))(torch.from_numpy(tok.input_ids))
    for row, n in enumerate(tok.lengths):
        np.testing.assert_allclose(mean[row], feats[row, :n].mean(0).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(eot[row], feats[row, n - 1].numpy(), rtol=1e-6, atol=1e-7)
    words = [unicodedata.name(chr(c)).split()[-1].lower() for c in range(0x41, 0x5B)]
    many = [f"{a} {b} {c}" for a in words for b in words[:8] for c in words[:3]]
    g = embedding_geometry(tiny_s0, many, sample=300, seed=1)
    assert g["sample_used"] == 300 and g["dimension"] == 32 and g["random_weights"] is True
    assert 1 <= g["pca"]["components_for"]["90%"] <= g["pca"]["components_for"]["99%"] <= 32
    assert 0 < g["intrinsic_dimension"]["twonn"] < 32


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.txt").write_text("cat\n")
    for args, message in [([str(tmp_path / "missing.txt")], "does not exist"), ([], "at least one prompt"),
                          ([str(tmp_path / "p"), "--random-init"], "--random-init needs --model"),
                          ([str(tmp_path)], "no .txt prompt files")]:
        result = CliRunner().invoke(analyze_command, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1
