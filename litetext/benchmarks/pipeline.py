"""Whole-pipeline rows: one image and P prompts through a target's three graphs, as `litetext predict` runs them.

One run = the vision encoder once (batch 1, one image), the text encoder once on the P prompts as one batch,
and the heads on the image's features with the P prompts' features, as many prompts per call as predict puts
there (litetext.predict.heads_batch_for: one by default; a LiteRT runner cuts a batch into the graph's own).
Each run is timed whole and per graph; the record keeps the total's statistics and each graph's, with medians
over the same timed runs, so the split shows where the time goes. Static memory is the sum of the three
graphs' files (plus the tokenizer); resident memory is what loading all three costs in a fresh process.

The record's "graph" is "pipeline" and its "batch" the prompts per image, so pipeline rows merge across
devices and sit in every table beside the per-graph rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from litetext.benchmarks.stats import TimingOptions, latency_stats, measure_latency
from litetext.errors import LitetextError

GRAPH = "pipeline"
STAGES = ("vision_encoder", "text_encoder", "heads")
MIB = 2**20


def schedule(runtime: str, prompts: int, heads_batch: int | None = None) -> dict[str, Any]:
    """What one run does, as the record states it."""
    from litetext.predict import heads_batch_for

    per_call = min(heads_batch_for(runtime, heads_batch), prompts)
    calls = -(-prompts // per_call)
    return {
        "images": 1, "prompts": prompts,
        "vision_encoder": "once per image, batch 1",
        "text_encoder": f"once, the {prompts} prompt(s) as one batch",
        "heads": f"{calls} call(s) of up to {per_call} prompt(s)",
        "heads_batch": per_call,
        "as": "litetext predict (Predictor.predict_prompts)",
    }


class PipelineRun:
    """One image plus `prompts` prompts through open runners; records each stage's seconds per call of run()."""

    def __init__(self, runners: dict[str, Any], feeds, target, prompts: int, heads_batch: int | None = None):
        from litetext.models.heads_semantics import heads_attention_mask

        self.runners = runners
        self.pixels = feeds.pixels(target.image_size)
        self.text = feeds.text(target.context_length, target.padding, prompts, target.text_tokenizer()).feeds
        semantics = target.heads_semantics
        self.heads_masks = [heads_attention_mask(f["input_ids"], f["attention_mask"], semantics) for f in self.text]
        self.heads_batch = schedule(target.runtime, prompts, heads_batch)["heads_batch"]
        self.prompts = prompts
        self.seconds: list[dict[str, float]] = []
        self.calls = {stage: 0 for stage in STAGES}

    def _timed(self, stage: str, split: dict[str, float], work: Callable[[], Any]):
        t0 = time.perf_counter()
        out = work()
        split[stage] = split.get(stage, 0.0) + time.perf_counter() - t0
        return out

    def _call(self, stage: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls[stage] += 1
        return self.runners[stage].infer(feed)

    def __call__(self, i: int) -> None:
        split: dict[str, float] = {}
        pixels = self.pixels[i % len(self.pixels)]
        text_feed = self.text[i % len(self.text)]
        mask = self.heads_masks[i % len(self.text)]
        levels = self._timed("vision_encoder", split, lambda: self._call("vision_encoder", {"pixel_values": pixels}))
        text = self._timed("text_encoder", split, lambda: self._call("text_encoder", text_feed))["text_features"]
        for start in range(0, self.prompts, self.heads_batch):
            rows = slice(start, start + self.heads_batch)
            count = len(text[rows])

            def heads():  # the repeat of the image's features is part of feeding the heads, as in predict
                feed = {**{k: np.repeat(v, count, axis=0) for k, v in levels.items()},
                        "text_features": text[rows], "attention_mask": mask[rows]}
                return self._call("heads", feed)

            self._timed("heads", split, heads)
        self.seconds.append(split)


def pipeline_memory(target, probe: bool, reason: Callable[[BaseException], str]) -> dict[str, Any]:
    """Static memory of the three graphs (and of the text path's files) and, with `probe`, the resident memory
    loading all three adds in a fresh process."""
    memory: dict[str, Any] = {"units": "MiB"}
    try:
        per_graph = {g: target.weights_bytes(g) / MIB for g in STAGES}
        text_path = target.record_fields("text_encoder").get("text_path")
        memory.update(weights=sum(per_graph.values()), weights_per_graph=per_graph)
        if text_path:  # the bundle's text path holds the tokenizer (or a fixed vocabulary's list) too
            memory["bundle_files"] = (sum(per_graph.values()) - per_graph["text_encoder"]) + text_path["bytes"] / MIB
    except Exception as e:
        memory.update(weights=None, weights_error=reason(e))
    if not probe:
        memory.update(rss_after_load=None, peak_rss_load=None, note="memory probe not run")
        return memory
    from litetext.benchmarks.probe import probe_memory

    job = target.probe_job(STAGES[0])
    if job is None:
        memory.update(rss_after_load=None, peak_rss_load=None,
                      error=f"{target.label} cannot be loaded in a fresh process")
        return memory
    job.pop("graph")
    figures = probe_memory({**job, "graphs": list(STAGES)})
    memory.update(rss_after_load=figures.pop("rss_after_load", None), peak_rss_load=figures.pop("peak_rss_load", None))
    memory.update(figures)
    return memory


def bench_pipeline(target, prompt_counts: list[int], feeds, timing: TimingOptions, memory: bool,
                   base: dict[str, Any], progress: Callable[[str], None],
                   reason: Callable[[BaseException], str] = str, heads_batch: int | None = None) -> list[dict[str, Any]]:
    """Pipeline records of `target` (which has all three graphs), one per prompt count, `heads_batch` prompts
    per heads call (default: predict's); `base` holds the record fields every row of the target shares (model,
    device, threads, data, run); `reason` words an error for a failed record."""
    base = {**base, "graph": GRAPH, "parity": None}

    def failed(prompts: int, reason: str, memory_mb=None) -> dict[str, Any]:
        progress(f"{target.label} pipeline {prompts} prompt(s): FAILED: {reason}")
        return {**base, "batch": prompts, "schedule": schedule(target.runtime, prompts, heads_batch), "load_s": None,
                "latency_ms": None, "split_ms": None, "memory_mb": memory_mb, "status": "failed", "error": reason}

    missing = [g for g in STAGES if g not in target.graphs]
    if missing:
        return [failed(p, f"{target.label} has no {' and '.join(missing)} graph for a whole pipeline")
                for p in prompt_counts]
    progress(f"{target.label} pipeline: memory{' (fresh process, all three graphs)' if memory else ''}")
    mem = pipeline_memory(target, memory, reason)
    runners: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        for stage in STAGES:
            runners[stage] = target.open_runner(stage)
        load = {**target.load_seconds(), "runners": time.perf_counter() - t0}
        base["model"] = target.model_info()  # complete now that the model is loaded
    except Exception as e:
        for runner in runners.values():
            runner.close()
        return [failed(p, f"cannot open the runners: {reason(e)}", mem) for p in prompt_counts]
    records = []
    try:
        for prompts in prompt_counts:
            try:
                run = PipelineRun(runners, feeds, target, prompts, heads_batch)
                progress(f"{target.label} pipeline, 1 image + {prompts} prompt(s): timing")
                latency = measure_latency(run, timing)
            except Exception as e:
                records.append(failed(prompts, reason(e), mem))
                continue
            timed = run.seconds[latency["warmup"]:]  # the runs measure_latency timed (after its warm-up)
            split = {stage: latency_stats([s.get(stage, 0.0) for s in timed]) for stage in STAGES}
            per_run = {stage: run.calls[stage] // len(run.seconds) for stage in STAGES}
            records.append({**base, "batch": prompts, "schedule": schedule(target.runtime, prompts, heads_batch),
                            "calls_per_run": per_run, "load_s": load, "latency_ms": latency, "split_ms": split,
                            "memory_mb": mem, "status": "ok", "error": None})
            progress(line(records[-1]))
    finally:
        for runner in runners.values():
            runner.close()
    return records


def line(record: dict[str, Any]) -> str:
    split = record["split_ms"]
    parts = ", ".join(f"{stage.split('_')[0]} {split[stage]['p50']:.1f}" for stage in STAGES)
    latency = record["latency_ms"]
    return (f"{record['target']} pipeline, 1 image + {record['batch']} prompt(s): p50 {latency['p50']:.1f} ms "
            f"({parts}; {latency['runs']} runs)")


def check_prompt_counts(counts: list[int]) -> list[int]:
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 1:
        raise LitetextError(f"prompts per image must be positive integers such as 1,8, not {counts}")
    return counts

