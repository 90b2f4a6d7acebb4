"""Whole-pipeline bench rows (litetext.benchmarks.pipeline) on tiny three-graph bundles, ONNX Runtime and LiteRT."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import builtin_image

from litetext.benchmarks import BundleTarget, TimingOptions, merge_files, run_bench, write_results
from litetext.benchmarks.cli import bench
from litetext.benchmarks.pipeline import STAGES, schedule

FAST = TimingOptions(warmup=2, min_runs=4, min_seconds=0.0, max_seconds=10.0)
PROMPTS = ["a cat", "two dogs on a sofa", "red car", "the tall person in the back", "bird"]
CTX = 16


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory, tiny_s0):
    from litetext.export import export_bundle

    out = tmp_path_factory.mktemp("pipeline") / "onnx"
    export_bundle(tiny_s0, out, context_length=CTX, parity_prompts=PROMPTS, parity_images=[builtin_image()])
    return out


@pytest.fixture(scope="module")
def litert_bundle(tmp_path_factory, tiny_s0):
    pytest.importorskip("ai_edge_litert.interpreter", reason="the LiteRT interpreter (pip install 'litetext[litert]')")
    from litetext.export import export_bundle
    from litetext.export.litert.convert import converter_available

    if not converter_available():
        pytest.skip("litert-torch is not installed here (pip install 'litetext[litert]')")
    out = tmp_path_factory.mktemp("pipeline") / "litert"
    export_bundle(tiny_s0, out, target="litert", context_length=CTX, parity_prompts=PROMPTS,
                  parity_images=[builtin_image()])
    return out


class Counting:
    """A runner that counts its calls and the batch of each."""

    def __init__(self, runner, calls: list):
        self.runner, self.calls = runner, calls

    def infer(self, feed):
        self.calls.append(len(next(iter(feed.values()))))
        return self.runner.infer(feed)

    def close(self):
        self.runner.close()


def counted_target(path):
    target = BundleTarget(path)
    calls = {stage: [] for stage in STAGES}
    opener = target.open_runner
    target.open_runner = lambda graph: Counting(opener(graph), calls[graph])
    return target, calls


def check_rows(records, runtime, bundle, calls, heads_batch):
    assert [(r["graph"], r["batch"], r["status"]) for r in records] == [("pipeline", 1, "ok"), ("pipeline", 3, "ok")]
    runs_so_far = heads_runs_so_far = 0
    for r in records:
        heads_calls = -(-r["batch"] // heads_batch)
        assert r["runtime"] == runtime and r["calls_per_run"] == {"vision_encoder": 1, "text_encoder": 1,
                                                                   "heads": heads_calls}
        lat, split = r["latency_ms"], r["split_ms"]
        runs = 1 + (FAST.warmup - 1) + lat["runs"]  # the first run, the rest of the warm-up, the timed runs
        assert split["vision_encoder"]["runs"] == lat["runs"]
        # vision once per image: one call of batch 1 per run; text once on the prompts; heads on all of them,
        # heads_batch prompts per call
        assert calls["vision_encoder"][runs_so_far:] [:runs] == [1] * runs
        assert calls["text_encoder"][runs_so_far:][:runs] == [r["batch"]] * runs
        per_run = [min(heads_batch, r["batch"] - i * heads_batch) for i in range(heads_calls)]
        assert calls["heads"][heads_runs_so_far:][:runs * heads_calls] == per_run * runs
        heads_runs_so_far += runs * heads_calls
        runs_so_far += runs
        # the split adds up to the total: means are additive over the same runs; the rest is the loop itself
        parts = sum(split[stage]["mean"] for stage in STAGES)
        assert 0 < parts <= lat["mean"] <= parts * 1.15 + 0.5
        files = [bundle / name for name in ("text_encoder", "vision_encoder", "heads")]
        want = sum(f.stat().st_size for stem in files for f in bundle.glob(stem.name + ".*")) / 2**20
        assert r["memory_mb"]["weights"] == pytest.approx(want)
    assert len(calls["vision_encoder"]) == runs_so_far  # nothing else ran the vision encoder


def test_onnx_pipeline_rows_split_counts_and_memory(onnx_bundle):
    target, calls = counted_target(onnx_bundle)
    records = run_bench([target], graphs=["pipeline"], prompts=PROMPTS, timing=FAST, pipeline_prompts=[1, 3])
    check_rows(records, "onnxruntime", onnx_bundle, calls, heads_batch=1)  # predict's default
    memory = records[0]["memory_mb"]
    # all three graphs held in a fresh process cost more than the largest alone, and about the files' size
    assert memory["rss_after_load"] > max(memory["weights_per_graph"].values())
    assert memory["bundle_files"] > memory["weights"]  # + tokenizer.json


def test_litert_pipeline_rows(litert_bundle):
    target, calls = counted_target(litert_bundle)
    records = run_bench([target], graphs=["pipeline"], prompts=PROMPTS, timing=FAST, memory=False,
                        pipeline_prompts=[1, 3], heads_batch=2)
    check_rows(records, "litert", litert_bundle, calls, heads_batch=2)


def test_pipeline_rows_are_automatic_for_three_graphs_and_merge(onnx_bundle, tmp_path):
    from litetext.export import export_bundle  # noqa: F401  (the bundle fixture exported already)

    records = run_bench([BundleTarget(onnx_bundle)], batches=[1], prompts=PROMPTS, timing=FAST, memory=False,
                        pipeline_prompts=[2])
    assert [(r["graph"], r["batch"]) for r in records] == [
        ("text_encoder", 1), ("vision_encoder", 1), ("heads", 1), ("pipeline", 2)]
    assert records[-1]["schedule"]["heads"] == "2 call(s) of up to 1 prompt(s)"
    per_graph_only = run_bench([BundleTarget(onnx_bundle)], graphs=["text_encoder"], batches=[1], prompts=PROMPTS,
                               timing=FAST, memory=False)
    assert [r["graph"] for r in per_graph_only] == ["text_encoder"]
    # the same rows from two devices merge like the others: kept apart by their device
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_results(records, a)
    other = [{**r, "device": {**r["device"], "cpu": "another CPU"}} for r in records]
    write_results(other, b)
    merged = merge_files([a, b, a])
    assert len(merged) == 2 * len(records) and sum(r["graph"] == "pipeline" for r in merged) == 2


def test_pipeline_on_a_bundle_without_all_graphs_fails_in_the_record(tmp_path, tiny_s0):
    from litetext.export import export_bundle

    export_bundle(tiny_s0, tmp_path / "text", graphs=["text_encoder"], context_length=CTX, parity_prompts=PROMPTS)
    (row,) = run_bench([BundleTarget(tmp_path / "text")], graphs=["pipeline"], prompts=PROMPTS, timing=FAST,
                       memory=False, pipeline_prompts=[8])
    assert row["status"] == "failed" and "has no vision_encoder and heads graph" in row["error"]


def test_heads_batch_follows_predict():
    assert schedule("onnxruntime", 8)["heads_batch"] == 1  # predict's default: one prompt per heads call
    assert schedule("onnxruntime", 8, 3) == {**schedule("onnxruntime", 8, 3), "heads_batch": 3,
                                             "heads": "3 call(s) of up to 3 prompt(s)"}
    assert schedule("onnxruntime", 2, 8)["heads_batch"] == 2
    assert schedule("coreml", 8, 8)["heads_batch"] == 1  # Core ML heads take a fixed batch


def test_cli_prints_the_pipeline_table(onnx_bundle, tmp_path):
    result = CliRunner().invoke(bench, [str(onnx_bundle), "--graphs", "pipeline", "--pipeline-prompts", "1,2",
                                        "--prompts", str(_prompt_file(tmp_path)), "--no-memory", "--warmup", "1",
                                        "--min-runs", "2", "--min-seconds", "0", "--json", str(tmp_path / "r.json"),
                                        "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "Whole pipeline" in result.output and "| S0 | onnxruntime | fp32 | 2 |" in result.output
    assert "## Whole pipeline" in (tmp_path / "report" / "report.md").read_text()
    bad = CliRunner().invoke(bench, [str(onnx_bundle), "--pipeline-prompts", "0"])
    assert bad.exit_code != 0 and "--pipeline-prompts takes comma-separated positive integers" in bad.output


def _prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path
