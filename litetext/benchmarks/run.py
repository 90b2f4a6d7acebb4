"""The benchmark loop: for each target, graph and batch size, one record of latency, memory and parity.

    from litetext.benchmarks import open_target, run_bench
    records = run_bench([open_target("out/s0-fp16"), open_target("torch:litetext-s0")], graphs=["text_encoder"])

A target or graph that fails is recorded with status "failed" and the reason, never dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from litetext.benchmarks.pipeline import GRAPH as PIPELINE
from litetext.benchmarks.pipeline import STAGES, bench_pipeline, check_prompt_counts
from litetext.benchmarks.stats import TimingOptions, measure_latency
from litetext.benchmarks.targets import Target, TorchTarget
from litetext.errors import LitetextError

MIB = 2**20


def _reason(error: BaseException) -> str:
    """What a failed record says: the user's error as it is; an OS error as what failed where; anything else
    as an unexpected failure to report, its type and first line kept as the detail."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(error, LitetextError):
        return text
    if isinstance(error, OSError):
        return f"{error.filename or 'a file'}: {error.strerror or text}"
    if isinstance(error, MemoryError):
        return "out of memory"
    return f"unexpected failure inside litetext (please report it with the command line): {type(error).__name__} {text}"


class References:
    """Reference runners, made once and shared: a bundle's default reference (eager PyTorch of the same
    weights) reuses a torch target being benchmarked when it is the same model."""

    def __init__(self, explicit: Target | None, candidates: list[Target]):
        self.explicit = explicit
        self._torch = {t.key(): t for t in candidates if isinstance(t, TorchTarget)}
        self._runners: dict[tuple[int, str], Any] = {}
        self._outputs: dict[tuple, list] = {}
        self.text_only = False  # a text_encoder-only bench: rebuilt references load the text encoder alone

    def for_target(self, target: Target) -> Target | None:
        """The reference for `target` (None: it is a reference itself). Raises LitetextError when one is
        needed and cannot be had."""
        ref = self.explicit if self.explicit is not None else target.default_reference()
        if ref is None or ref is target:
            return None
        if isinstance(ref, TorchTarget):
            if self.text_only or target.graphs == ["text_encoder"]:
                ref.text_only()
            ref = ref.at(target.context_length, target.padding.name)
            ref = self._torch.setdefault(ref.key(), ref)
            if ref is target:
                return None
            ref.check_expected()
        elif (ref.context_length, ref.padding) != (target.context_length, target.padding):
            raise LitetextError(
                f"reference {ref.label} has context {ref.context_length} and {ref.padding.name} padding, "
                f"{target.label} has {target.context_length} and {target.padding.name}"
            )
        return ref

    def runner(self, ref: Target, graph: str):
        key = (id(ref), graph)
        if key not in self._runners:
            self._runners[key] = ref.open_runner(graph)
        return self._runners[key]

    def outputs(self, ref: Target, graph: str, batch: int, feeds: list[dict]) -> list[dict]:
        """Reference outputs; text features are kept for the next target with the same reference."""
        key = (id(ref), graph, batch)
        if key in self._outputs:
            return self._outputs[key]
        runner = self.runner(ref, graph)
        outputs = [runner.infer(feed) for feed in feeds]
        if graph == "text_encoder":
            self._outputs[key] = outputs
        return outputs

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        self._outputs.clear()


def _threads(target: Target) -> dict[str, Any]:
    if target.runtime == "torch":
        import torch

        return {"intra_op": torch.get_num_threads(), "how": "torch.get_num_threads()"}
    requested = getattr(target, "threads", None)
    if requested:
        return {"intra_op": requested, "how": "requested"}
    from litetext.benchmarks.device import device_info

    return {"intra_op": device_info()["cpu_cores_physical"], "how": f"{target.runtime} default (one per physical core)"}


def _base_record(target: Target, graph: str, feeds, run_info: dict) -> dict[str, Any]:
    from litetext.benchmarks.device import device_info

    record: dict[str, Any] = {
        "graph": graph,
        "runtime": target.runtime,
        "precision": target.precision,
        "batch": None,
        "target": target.label,
        "model": target.model_info(),
    }
    try:
        record.update(context_length=target.context_length, text_padding=target.padding.name)
        record.update(target.record_fields(graph))
    except Exception as e:  # a torch target whose model cannot load: the record says why below
        record.update(context_length=None, text_padding=None, _early_error=_reason(e))
    record.update(device=device_info(), threads=_threads(target), data=feeds.describe(), run=run_info)
    return record


def _memory(target: Target, graph: str, probe: bool) -> dict[str, Any]:
    memory: dict[str, Any] = {"units": "MiB"}
    try:
        memory["weights"] = target.weights_bytes(graph) / MIB
    except Exception as e:
        memory["weights"] = None
        memory["weights_error"] = _reason(e)
    if not probe:
        memory.update(rss_after_load=None, peak_rss_load=None, note="memory probe not run")
        return memory
    from litetext.benchmarks.probe import probe_memory

    job = target.probe_job(graph)
    if job is None:
        memory.update(rss_after_load=None, peak_rss_load=None, error=f"{target.label} cannot be loaded in a fresh process")
        return memory
    figures = probe_memory(job)
    memory.update(rss_after_load=figures.pop("rss_after_load", None), peak_rss_load=figures.pop("peak_rss_load", None))
    memory.update(figures)
    if target.runtime == "torch":
        memory["torch_note"] = ("load_model builds the text encoder alone for the text_encoder graph, the whole "
                                "model for the others; after the load only the graph's modules are kept (the heads "
                                "graph holds the whole model)")
    return memory


def _graph_feeds(target: Target, graph: str, batch: int, feeds, references: References, ref: Target | None):
    if graph == "text_encoder":
        return feeds.text(target.context_length, target.padding, batch, target.text_tokenizer())
    if graph == "vision_encoder":
        return feeds.vision(target.image_size, batch)
    # heads: features from the reference's graphs (so the heads are measured alone), else the target's own
    source = ref if ref is not None else target
    missing = [g for g in ("text_encoder", "vision_encoder") if g not in source.graphs]
    if missing:
        raise LitetextError(f"heads feeds need {' and '.join(missing)} from {source.label} (or a --reference that has them)")
    return feeds.heads(target.context_length, target.padding, target.image_size, batch,
                       references.runner(source, "text_encoder"), references.runner(source, "vision_encoder"),
                       target.heads_semantics)


def _parity(graph: str, batch: int, runner, graph_feeds, ref: Target | None, references: References,
            threshold: float) -> dict[str, Any]:
    from litetext.calibration.parity import instance_agreement, output_parity

    if ref is None:
        return {"reference": None, "note": "this target is the reference (eager PyTorch fp32)"}
    want = references.outputs(ref, graph, batch, graph_feeds.reference_feeds or graph_feeds.feeds)
    got = [runner.infer(feed) for feed in graph_feeds.feeds]
    parity: dict[str, Any] = {"reference": ref.label, "reference_runtime": ref.runtime,
                              "reference_precision": ref.precision, "status": "ok"}
    if graph_feeds.reference_feeds is None:
        parity["outputs"] = output_parity(want, got, graph_feeds.feeds)
    else:  # a pruned text encoder: exact on covered prompts, pooled cosine on the others (other token counts)
        import numpy as np

        from litetext.vocabulary.build import pruned_figures

        joined = lambda parts, key: np.concatenate([p[key] for p in parts])  # noqa: E731
        figures = pruned_figures(joined(want, "text_features"), joined(got, "text_features"),
                                 joined(graph_feeds.reference_feeds, "attention_mask"),
                                 joined(graph_feeds.feeds, "attention_mask"), graph_feeds.covered)
        parity.update(outputs=figures["outputs"], coverage=figures["coverage"], uncovered=figures["uncovered"])
    if graph == "heads":
        parity["instances"] = instance_agreement(want, got, graph_feeds.image_sizes, threshold)
    return parity


def bench_target(target: Target, graphs: list[str] | None, batches: list[int], feeds, references: References,
                 timing: TimingOptions, memory: bool, threshold: float, run_info: dict,
                 progress: Callable[[str], None]) -> list[dict[str, Any]]:
    records = []
    for graph in graphs or target.graphs:
        base = _base_record(target, graph, feeds, run_info)
        early = base.pop("_early_error", None)

        def failed(batch: int, reason: str, memory_mb=None, load_s=None) -> dict[str, Any]:
            progress(f"{target.label} {graph} batch {batch}: FAILED: {reason}")
            return {**base, "batch": batch, "load_s": load_s, "latency_ms": None, "memory_mb": memory_mb,
                    "parity": None, "status": "failed", "error": reason}

        if early or graph not in target.graphs:
            reason = early or f"{target.label} has no {graph} graph (it has {', '.join(target.graphs)})"
            records.extend(failed(b, reason) for b in batches)
            continue
        progress(f"{target.label} {graph}: memory{' (fresh process)' if memory else ''}")
        mem = _memory(target, graph, memory)
        try:
            t0 = time.perf_counter()
            runner = target.open_runner(graph)
            load = {**target.load_seconds(), "runner": time.perf_counter() - t0}
        except Exception as e:
            records.extend(failed(b, f"cannot open the runner: {_reason(e)}", memory_mb=mem) for b in batches)
            continue
        base["model"] = target.model_info()  # complete now that the model is loaded
        base["provider"] = getattr(runner, "provider", None)
        try:
            ref, ref_error = references.for_target(target), None
        except Exception as e:
            ref, ref_error = None, _reason(e)
        for batch in batches:
            try:
                graph_feeds = _graph_feeds(target, graph, batch, feeds, references, ref)
                progress(f"{target.label} {graph} batch {batch}: timing")
                latency = measure_latency(lambda i: runner.infer(graph_feeds.feeds[i % len(graph_feeds.feeds)]), timing)
            except Exception as e:
                records.append(failed(batch, _reason(e), memory_mb=mem, load_s=load))
                continue
            if ref_error:
                parity = {"reference": None, "status": "failed", "error": ref_error}
            else:
                try:
                    parity = _parity(graph, batch, runner, graph_feeds, ref, references, threshold)
                except Exception as e:
                    parity = {"reference": getattr(ref, "label", None), "status": "failed", "error": _reason(e)}
            records.append({**base, "batch": batch, "load_s": load, "latency_ms": latency, "memory_mb": mem,
                            "parity": parity, "status": "ok", "error": None})
            progress(_line(records[-1]))
        runner.close()
    return records


def failed_records(label: str, runtime: str, precision: str, model: dict[str, Any], graph: str, batches: list[int],
                   error: str, context_length: int | None = None, text_padding: str | None = None,
                   run_info: dict | None = None) -> list[dict[str, Any]]:
    """Records for a configuration that could not even be built (an export that failed, say), in the same
    shape as measured ones, so it shows in every table as failed with its reason."""
    from litetext.benchmarks.device import device_info

    return [{"graph": graph, "runtime": runtime, "precision": precision, "batch": b, "target": label, "model": model,
             "context_length": context_length, "text_padding": text_padding, "device": device_info(),
             "threads": None, "data": None, "run": run_info or {}, "load_s": None, "latency_ms": None,
             "memory_mb": None, "parity": None, "status": "failed", "error": error} for b in batches]


def _line(record: dict[str, Any]) -> str:
    from litetext.benchmarks.report import summary

    lat = record["latency_ms"]
    text = (f"{record['target']} {record['graph']} batch {record['batch']}: p50 {lat['p50']:.2f} ms "
            f"(p90 {lat['p90']:.2f}, {lat['runs']} runs)")
    figures = summary(record["parity"])
    if figures:
        text += f", cosine min {figures['cosine_min']:.6f}"
    return text


def run_bench(targets: list[Target], graphs: list[str] | None = None, batches: list[int] = (1, 8),
              prompts: list[str] | None = None, images: list | None = None, reference: Target | None = None,
              timing: TimingOptions = TimingOptions(), memory: bool = True, threshold: float = 0.5,
              progress: Callable[[str], None] = lambda message: None, command: str | None = None,
              pipeline_prompts: list[int] = (1, 8), heads_batch: int | None = None) -> list[dict[str, Any]]:
    """Benchmark each target's graphs (default: all it has) at each batch size; returns the records. A target
    with all three graphs also gets whole-pipeline rows (litetext.benchmarks.pipeline), one per count of
    `pipeline_prompts` (prompts per image, `heads_batch` of them per heads call: litetext.predict.heads_batch_for);
    `graphs` may name "pipeline" to ask for them (alone, or beside graphs)."""
    from litetext.calibration.feeds import RealInputs
    from litetext.calibration.data import builtin_images, builtin_prompts, read_images
    from litetext.predict import heads_batch_for

    if not targets:
        raise LitetextError("nothing to benchmark: give at least one TARGET")
    batches = list(batches)
    if not batches or any(int(b) < 1 for b in batches):
        raise LitetextError(f"batch sizes must be positive integers, not {batches}")
    heads_batch_for("onnxruntime", heads_batch)  # a clear error for a batch below one, before any work
    feeds = RealInputs(prompts or builtin_prompts(), read_images(images) if images else builtin_images())
    run_info = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "timing": timing.to_json()}
    if command:
        run_info["command"] = command
    references = References(reference, targets)
    if graphs is not None and set(graphs) == {"text_encoder"}:  # eager models load their text encoder alone
        for target in [*targets, reference]:
            if isinstance(target, TorchTarget):
                target.text_only()
        references.text_only = True
    per_graph = None if graphs is None else [g for g in graphs if g != PIPELINE]
    prompt_counts = check_prompt_counts(pipeline_prompts)
    records: list[dict[str, Any]] = []
    try:
        for target in targets:
            if per_graph is None or per_graph:
                records.extend(bench_target(target, per_graph, batches, feeds, references, timing, memory, threshold,
                                            run_info, progress))
            # automatic for a target with all three graphs; asked for with graphs=[..., "pipeline"]
            if (PIPELINE in graphs) if graphs is not None else set(STAGES) <= set(target.graphs):
                base = _base_record(target, PIPELINE, feeds, run_info)
                base.pop("_early_error", None)
                records.extend(bench_pipeline(target, prompt_counts, feeds, timing, memory, base, progress, _reason,
                                              heads_batch))
    finally:
        references.close()
    return records
