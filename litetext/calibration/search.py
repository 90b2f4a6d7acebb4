"""The mixed-precision search every calibrated precision shares (ONNX INT8, TensorRT Q/DQ, Core ML w4): rank
layer groups by how much error each causes alone, then keep the fewest most sensitive ones at the higher precision
that meet the target, all measured on calibration data only.

The fewest is found by bisection over the ranked list, assuming that keeping more of the most sensitive groups
never makes the error worse: log2(groups) + 1 measurements instead of up to one per group (the heads have 29
groups, each measurement a full pass over the calibration images at 1008 px).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Figures = dict[str, Any]


@dataclass
class SearchResult:
    kept: list[str]  # groups kept at the higher precision, most sensitive first
    figures: Figures  # of the chosen candidate
    sensitivity: dict[str, float] = field(default_factory=dict)  # empty when nothing had to be kept


def keep_most_sensitive(groups: Sequence[str], figures_keeping: Callable[[list[str]], Figures],
                        error_alone: Callable[[str], float], meets: Callable[[Figures], bool]) -> SearchResult:
    """`figures_keeping(kept)`: figures with the `kept` groups at the higher precision and the rest reduced;
    `error_alone(group)`: the error when `group` alone is reduced; `meets(figures)`: the target. When even
    keeping every group misses it, every group is kept and its figures returned."""
    figures = figures_keeping([])
    if meets(figures) or not groups:
        return SearchResult([], figures)
    sensitivity = {group: error_alone(group) for group in groups}
    ranked = sorted(sensitivity, key=sensitivity.get, reverse=True)
    measured: dict[int, Figures] = {}

    def at(count: int) -> Figures:
        if count not in measured:
            measured[count] = figures_keeping(ranked[:count])
        return measured[count]

    low, high = 1, len(ranked)  # invariant: keeping `high` groups meets the target (or nothing does)
    if meets(at(high)):
        while low < high:
            middle = (low + high) // 2
            if meets(at(middle)):
                high = middle
            else:
                low = middle + 1
    return SearchResult(ranked[:high], at(high), sensitivity)
