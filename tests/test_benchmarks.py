"""The benchmark harness: statistics, the memory probe, records from real runs, failures, merge and report."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import tiny_model, tiny_overrides
from litetext.benchmarks import (BundleTarget, TimingOptions, TorchTarget, latency_stats,
                                 measure_latency, merge_files, probe_memory, run_bench, write_report, write_results)
from litetext.benchmarks.cli import bench
from litetext.calibration.parity import instance_agreement

FAST = TimingOptions(warmup=1, min_runs=3, min_seconds=0.0, max_seconds=5.0)
PROMPTS = ["a cat", "two dogs on a sofa", "red car", "the tall person in the back", "bird"]


@pytest.fixture(scope="module")
def s0_bundle(tmp_path_factory, tiny_s0):
    from litetext.export import export_bundle

    out = tmp_path_factory.mktemp("bench") / "s0"
    export_bundle(tiny_s0, out, graphs=["text_encoder"], parity_prompts=PROMPTS)
    return out


@pytest.fixture(scope="module")
def s0_torch(tiny_s0):
    return TorchTarget.from_loaded(tiny_s0, config_overrides=tiny_overrides("litetext-s0"), label="torch:tiny-s0")


@pytest.fixture(scope="module")
def records(s0_bundle, s0_torch):
    return run_bench([BundleTarget(s0_bundle), s0_torch], graphs=["text_encoder"], batches=[1, 2], prompts=PROMPTS,
                     reference=s0_torch, timing=FAST)


def test_latency_stats_on_a_known_sequence():
    stats = latency_stats(np.arange(1, 101) / 1e3)  # 1..100 ms
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["std"] == pytest.approx(np.sqrt((100**2 - 1) / 12))
    assert (stats["min"], stats["max"], stats["runs"], stats["trimmed"]) == (1.0, 100.0, 100, "none")


def test_timing_needs_both_minimums_and_stops_at_the_cap():
    now = [0.0]

    def run(i):
        now[0] += 0.010  # every run takes 10 ms

    out = measure_latency(run, TimingOptions(warmup=2, min_runs=20, min_seconds=1.0), clock=lambda: now[0])
    assert out["runs"] == 100 and out["stopped_by"] == "minimums reached"  # 1 s needs 100 runs of 10 ms
    assert out["p50"] == pytest.approx(10.0) and out["first_run_ms"] == pytest.approx(10.0)
    out = measure_latency(run, TimingOptions(min_runs=1000, min_seconds=0.0, max_seconds=0.5), clock=lambda: now[0])
    assert out["runs"] == 50 and out["stopped_by"] == "max_seconds"


def test_memory_probe_sees_a_known_allocation():
    figures = probe_memory({"kind": "allocate", "mib": 200})
    assert 180 <= figures["rss_after_load"] <= 220, figures
    assert 180 <= figures["peak_rss_load"] <= 220, figures
    assert figures["baseline_rss"] > 0


def test_bench_records_bundle_against_torch_reference(records):
    assert [(r["target"].split("/")[-1], r["batch"]) for r in records] == [
        ("s0", 1), ("s0", 2), ("torch:tiny-s0", 1), ("torch:tiny-s0", 2)]
    for r in records:
        assert r["status"] == "ok" and r["error"] is None
        assert r["graph"] == "text_encoder" and r["precision"] == "fp32"
        assert r["model"]["preset"] == "litetext-s0" and r["model"]["random"] and "RANDOM" in r["model"]["weights_label"]
        lat = r["latency_ms"]
        assert lat["runs"] >= 3 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["trimmed"] == "none"
        mem = r["memory_mb"]
        assert mem["weights"] > 1 and mem["rss_after_load"] > 0 and mem["peak_rss_load"] >= mem["rss_after_load"]
        assert {"cpu", "cpu_cores_logical", "os", "python", "tools", "accelerator"} <= set(r["device"])
        assert r["context_length"] == 16 and r["data"]["prompts"] == len(PROMPTS)
    bundle, torch_ = records[0], records[2]
    assert bundle["runtime"] == "onnxruntime" and torch_["runtime"] == "torch"
    text = bundle["parity"]["outputs"]["text_features"]
    assert bundle["parity"]["reference"] == "torch:tiny-s0"
    assert text["cosine_mean"] == pytest.approx(1, abs=1e-6) and text["cosine_worst_1pct"] > 0.99999
    assert text["max_abs_error"] < 1e-4
    assert torch_["parity"]["reference"] is None  # it is the reference
    # the same weights on disk and in memory (the torch graph keeps its baked position table too)
    assert bundle["memory_mb"]["weights"] == pytest.approx(torch_["memory_mb"]["weights"], rel=0.05)


def test_failures_are_recorded_with_their_reason(s0_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(s0_bundle, broken)
    (broken / "text_encoder.onnx").write_bytes(b"not an onnx file")
    out = run_bench([BundleTarget(broken)], graphs=["text_encoder", "heads"], batches=[1, 2], prompts=PROMPTS,
                    timing=FAST, memory=False)
    assert len(out) == 4 and all(r["status"] == "failed" for r in out)
    assert "cannot open the runner" in out[0]["error"] and "ONNX Runtime cannot open" in out[0]["error"]
    assert "has no heads graph" in out[2]["error"]
    assert out[0]["latency_ms"] is None and out[0]["memory_mb"]["weights"] > 0


def test_instance_agreement_matches_by_mask_iou():
    rng = np.random.default_rng(0)
    q, s = 6, 8
    ref = {"pred_logits": np.full((1, q), -10.0, np.float32), "presence_logits": np.full((1, 1), 10.0, np.float32),
           "pred_boxes": np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (1, q, 1)),
           "pred_masks": rng.normal(size=(1, q, s, s)).astype(np.float32) * 5}
    ref["pred_logits"][0, :3] = 5.0  # three instances above 0.5
    same = instance_agreement([ref], [ref], [(16, 16)])
    assert (same["matched"], same["lost"], same["gained"]) == (3, 0, 0)
    assert same["mask_iou_mean"] == 1.0 and same["box_iou_mean"] == 1.0 and same["score_max_abs_error"] == 0.0
    other = {k: v.copy() for k, v in ref.items()}
    other["pred_logits"][0, 2] = -10.0  # one lost
    other["pred_logits"][0, 4] = 5.0  # one gained
    moved = instance_agreement([ref], [other], [(16, 16)])
    assert (moved["reference_instances"], moved["candidate_instances"]) == (3, 3)
    assert (moved["matched"], moved["lost"], moved["gained"]) == (2, 1, 1)


def test_heads_records_carry_instance_agreement():
    cand = TorchTarget.from_loaded(tiny_model("litetext-s0", seed=0), config_overrides=tiny_overrides("litetext-s0"))
    ref = TorchTarget.from_loaded(tiny_model("litetext-s0", seed=1), config_overrides=tiny_overrides("litetext-s0"))
    out = run_bench([cand], graphs=["heads"], batches=[1], prompts=PROMPTS, reference=ref, memory=False,
                    timing=TimingOptions(warmup=1, min_runs=2, min_seconds=0.0), threshold=0.0)
    (r,) = out
    assert r["status"] == "ok", r["error"]
    agreement = r["parity"]["instances"]
    assert agreement["reference_instances"] == agreement["candidate_instances"] == 2 * 12  # 2 images, 12 queries
    assert agreement["matched"] + agreement["lost"] == agreement["reference_instances"]
    assert set(r["parity"]["outputs"]) == {"pred_logits", "pred_boxes", "pred_masks", "presence_logits"}
    assert r["memory_mb"]["weights"] > 0


def test_merge_joins_files_and_drops_duplicates(records, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_results(records[:3], a)
    write_results(records[2:], b)  # records[2] is in both
    merged = merge_files([a, b])
    assert merged == records
    out = tmp_path / "all.json"
    result = CliRunner().invoke(bench, ["--merge", str(a), str(b), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["records"]) == 4 and data["merged_from"] == [str(a), str(b)]
    assert all("device" in r for r in data["records"])


def test_report_writes_table_and_plots(records, tmp_path):
    paths = write_report(records, tmp_path / "report")
    for key in ("latency_vs_memory", "parity"):
        data = paths[key].read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    table = paths["markdown"].read_text()
    rows = [line for line in table.splitlines() if line.startswith("| S0 | text_encoder")]
    assert len(rows) == len(records)
    assert "weights: random" in table and "onnxruntime" in table and "torch" in table


def test_cli_runs_a_bundle_and_reports(s0_bundle, tmp_path):
    out, report = tmp_path / "r.json", tmp_path / "rep"
    result = CliRunner().invoke(bench, [str(s0_bundle), "--reference", str(s0_bundle), "--graphs", "text_encoder",
                                        "--batch", "1,2", "--min-runs", "3", "--min-seconds", "0", "--no-memory",
                                        "--json", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["batch"] for r in data["records"]] == [1, 2] and "--batch 1,2" in data["command"]
    assert data["records"][0]["parity"]["outputs"]["text_features"]["cosine_min"] > 0.99999
    assert (report / "report.md").is_file() and "| S0 | text_encoder" in result.output


@pytest.mark.parametrize("args, message", [
    (["no/such/bundle"], "does not exist"),
    (["torch:litetext-s0", "--batch", "0"], "--batch"),
    (["torch:litetext-s0", "--graphs", "eyes"], "unknown graphs"),
    ([], "at least one TARGET"),
])
def test_cli_user_errors_are_one_line(args, message):
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output
