"""Core ML on macOS: `coremltools.models.MLModel(...).predict` on an exported `.mlpackage`, and the toolchain
facts both the runner and the Core ML target need (importing coremltools, whether this machine can predict,
compute units).

Core ML takes int32 where the bundle's graphs declare int64 (token ids, masks): the runner casts. A package
accepts the batch sizes it was exported with (enumerated shapes, or a bounded range): a feed of another batch
is cut into chunks of accepted sizes, largest first, and the outputs joined, so callers feed any batch.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec
from litetext.runtimes.base import Runner

COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
DEFAULT_COMPUTE_UNITS = "ALL"
INSTALL_HINT = "coremltools is not installed; install it with: pip install 'litetext[coreml]'"


def require_coremltools():
    """Import coremltools quietly (on Linux it logs that its native predict library is absent), or fail with
    the one line that says how to install it."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError:
        raise LitetextError(INSTALL_HINT) from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return coremltools


def can_predict() -> bool:
    """Whether this machine can run Core ML predictions (macOS with coremltools' native library)."""
    if sys.platform != "darwin":
        return False
    try:
        require_coremltools()
        import coremltools.libcoremlpython  # noqa: F401
    except (LitetextError, ImportError):
        return False
    return True


class CoreMLRunner(Runner):
    runtime = "coreml"

    def __init__(self, path: str | Path, spec: GraphSpec, precision: str = "fp16", compute_units: str | None = None):
        super().__init__(spec, precision)
        ct = require_coremltools()
        if not can_predict():
            raise LitetextError(
                "Core ML predictions need macOS (coremltools' predict library is absent here); on this machine "
                "measure a package with litetext.export.coreml.simulate.simulated_runner"
            )
        path = Path(path)
        model_spec = ct.utils.load_spec(str(path))
        metadata = dict(model_spec.description.metadata.userDefined)
        units = compute_units or json_or_str(metadata.get("com.litetext.compute_units")) or "ALL"
        if units not in COMPUTE_UNITS:
            raise LitetextError(f"unknown Core ML compute units {units!r}; choose one of: {', '.join(COMPUTE_UNITS)}")
        have = [i.name for i in model_spec.description.input]
        if have != spec.input_names:
            raise LitetextError(f"{path} has inputs {have}, the manifest says {spec.input_names}")
        self.batch_sizes, self.max_batch = _accepted_batches(model_spec.description.input[0])
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units))
        except Exception as e:  # Core ML raises its own exception types for packages it cannot compile
            raise LitetextError(f"Core ML cannot open {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self.compute_units = units
        self.path = path

    def _chunks(self, n: int) -> list[int]:
        """Batch sizes the package accepts that add up to `n`."""
        if self.batch_sizes is None:  # a bounded range
            return [min(self.max_batch, n - i) for i in range(0, n, self.max_batch)]
        chunks, left = [], n
        while left:
            fitting = [b for b in self.batch_sizes if b <= left]
            if not fitting:
                raise LitetextError(f"{self.path} accepts batches of {self.batch_sizes}, cannot take {left}")
            chunks.append(max(fitting))
            left -= chunks[-1]
        return chunks

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(next(iter(feed.values())))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.spec.output_names}
        start = 0
        for size in self._chunks(n):
            chunk = {}
            for tensor in self.spec.inputs:
                value = feed[tensor.name][start : start + size]
                chunk[tensor.name] = value.astype(np.int32) if value.dtype.kind in "iu" else value.astype(np.float32)
            result = self.model.predict(chunk)
            for name in self.spec.output_names:
                parts[name].append(np.asarray(result[name], dtype=np.float32))
            start += size
        return [np.concatenate(parts[name]) for name in self.spec.output_names]

    def close(self) -> None:
        self.model = None


def json_or_str(value: str | None):
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _accepted_batches(feature) -> tuple[list[int] | None, int]:
    """(enumerated batch sizes, or None for a range; the largest batch) of an input's description."""
    array = feature.type.multiArrayType
    if array.HasField("enumeratedShapes"):
        sizes = sorted({int(s.shape[0]) for s in array.enumeratedShapes.shapes})
        return sizes, sizes[-1]
    if array.HasField("shapeRange"):
        bound = array.shapeRange.sizeRanges[0]
        upper = int(bound.upperBound) if bound.upperBound > 0 else 1 << 30
        return None, upper
    return [int(array.shape[0])], int(array.shape[0])
