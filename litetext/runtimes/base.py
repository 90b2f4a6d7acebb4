"""One contract for every runtime: a runner opens a graph and answers infer(feed) -> outputs, by name.

PyTorch is a runner too, so parity is one loop over runners and one table. The base class checks the feed
against the graph's description, so every runtime rejects a bad feed with the same clear message.
"""

from __future__ import annotations

import numpy as np

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec


class Runner:
    runtime = "base"

    def __init__(self, spec: GraphSpec, precision: str = "fp32"):
        self.spec = spec
        self.precision = precision

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_feed(feed)
        outputs = self._run({name: feed[name] for name in self.spec.input_names})
        return dict(zip(self.spec.output_names, outputs))

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _check_feed(self, feed: dict[str, np.ndarray]) -> None:
        missing = [n for n in self.spec.input_names if n not in feed]
        if missing:
            raise LitetextError(f"{self.spec.name}: feed lacks inputs {missing} (needs {self.spec.input_names})")
        for tensor in self.spec.inputs:
            value = feed[tensor.name]
            if value.dtype != np.dtype(tensor.dtype):
                raise LitetextError(f"{self.spec.name}: input {tensor.name} is {value.dtype}, needs {tensor.dtype}")
            fixed = [(i, d) for i, d in enumerate(tensor.shape) if isinstance(d, int)]
            if value.ndim != len(tensor.shape) or any(value.shape[i] != d for i, d in fixed):
                raise LitetextError(
                    f"{self.spec.name}: input {tensor.name} has shape {value.shape}, needs {tensor.shape}"
                )

    def close(self) -> None:
        """Free the runtime's resources (sessions, engines)."""
