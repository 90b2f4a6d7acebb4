"""Latency: time a callable apart from its load, after warm-up, until a minimum count and time are reached.

Every timed run is kept: nothing is trimmed, and the record says so (`trimmed: "none"`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy 'linear')"


@dataclass(frozen=True)
class TimingOptions:
    """How long to time each configuration. A run stops when it has both `min_runs` and `min_seconds` of
    timed runs, or at `max_runs` / `max_seconds` (the record says which)."""

    warmup: int = 3
    min_runs: int = 20
    min_seconds: float = 2.0
    max_runs: int = 1000
    max_seconds: float = 60.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(seconds: list[float] | np.ndarray) -> dict[str, Any]:
    """Summary of timed runs (given in seconds) in milliseconds: p50, p90, p99, mean, std (population)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "runs": int(ms.size),
        "percentiles": PERCENTILE_METHOD,
        "trimmed": "none",
    }


def measure_latency(run: Callable[[int], Any], options: TimingOptions = TimingOptions(),
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time `run(i)` (i counts up; use it to cycle through feeds). The first call is timed on its own
    (`first_run_ms`: lazy initialisation shows there), then `warmup - 1` more untimed calls, then timed calls."""
    start = clock()
    run(0)
    first = clock() - start
    for i in range(1, max(options.warmup, 1)):
        run(i)
    samples: list[float] = []
    began = clock()
    i = max(options.warmup, 1)
    while True:
        t0 = clock()
        run(i)
        samples.append(clock() - t0)
        i += 1
        elapsed = clock() - began
        if len(samples) >= options.min_runs and elapsed >= options.min_seconds:
            stopped = "minimums reached"
            break
        if len(samples) >= options.max_runs:
            stopped = "max_runs"
            break
        if elapsed >= options.max_seconds:
            stopped = "max_seconds"
            break
    return {
        **latency_stats(samples),
        "first_run_ms": first * 1e3,
        "warmup": max(options.warmup, 1),
        "timed_seconds": elapsed,
        "stopped_by": stopped,
    }
