"""Benchmarks: latency, memory and parity of exported bundles and eager PyTorch, one JSON record per
(graph, runtime, precision, batch, model), merged across devices and reported as markdown and plots.

    from litetext.benchmarks import open_target, run_bench, write_results, write_report
    records = run_bench([open_target("out/s0"), open_target("torch:litetext-s0")], batches=[1, 8])

Names are imported on first use, so `python -m litetext.benchmarks.probe` starts light.

This package is the harness (the library `litetext bench` runs). The top-level `benchmarks/` folder holds the
scripts that run it on full-size models and the results they wrote (see benchmarks/README.md there).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run_bench": "run",
    "failed_records": "run",
    "TimingOptions": "stats",
    "latency_stats": "stats",
    "measure_latency": "stats",
    "open_target": "targets",
    "Target": "targets",
    "BundleTarget": "targets",
    "TorchTarget": "targets",
    "probe_memory": "probe",
    "device_info": "device",
    "write_results": "results",
    "read_records": "results",
    "merge_files": "results",
    "merge_records": "results",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
