"""LiteRT (.tflite) in the ai-edge-litert interpreter on the CPU, with XNNPACK as Android apps run it.

LiteRT graphs have static shapes (the GPU delegate and NPUs want them): the runner cuts a feed into chunks of the
graph's batch, pads the last chunk with its last row and drops what the padding produced. Token ids are int64 in
the bundle's contract and int32 in the graph (LiteRT's index type): the runner casts them, as an app would.

A text encoder exported "embeddings in" takes token embeddings instead of ids; the table ships beside the graph
(`TOKEN_TABLE`, plus `TOKEN_SCALES` for an int8 table) and `TokenTable.lookup` is the lookup an app does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from litetext.errors import LitetextError
from litetext.models.graphs import GraphSpec
from litetext.runtimes.base import Runner

SIGNATURE = "serving_default"
TOKEN_TABLE = ".tokens.npy"  # suffixes after the graph's stem: text_encoder.tokens.npy
TOKEN_SCALES = ".token_scales.npy"
EMBEDDINGS_INPUT = "token_embeddings"


def interpreter_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def open_interpreter(path: str | Path, threads: int | None = None):
    """An interpreter with the default delegate (XNNPACK on the CPU), tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise LitetextError("the LiteRT interpreter is not installed: pip install 'litetext[litert]'") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise LitetextError(f"LiteRT cannot open {path}: {str(e).splitlines()[0]}") from None
    return interpreter


class TokenTable:
    """The token-embedding table an embeddings-in text encoder ships beside it: fp32, fp16, or int8 with one
    fp32 scale per row (symmetric). Plain .npy arrays, so any app reads them (a 128-byte-aligned header, then
    the rows in C order, little-endian)."""

    def __init__(self, rows: np.ndarray, scales: np.ndarray | None = None):
        if rows.dtype == np.int8 and scales is None:
            raise LitetextError("an int8 token table needs its per-row scales")
        self.rows, self.scales = rows, scales

    @classmethod
    def quantize(cls, table: np.ndarray, dtype: str) -> "TokenTable":
        """`table` (fp32 [V, D]) stored as `dtype`: fp32, fp16 or int8 (per-row symmetric)."""
        if dtype == "int8":
            scales = np.maximum(np.abs(table).max(axis=1), 1e-12).astype(np.float32) / 127
            return cls(np.clip(np.round(table / scales[:, None]), -127, 127).astype(np.int8), scales)
        if dtype not in ("fp32", "fp16"):
            raise LitetextError(f"a token table is fp32, fp16 or int8, not {dtype!r}")
        return cls(table.astype(np.float16 if dtype == "fp16" else np.float32))

    @classmethod
    def beside(cls, graph: Path) -> "TokenTable | None":
        rows = graph.with_name(graph.stem + TOKEN_TABLE)
        if not rows.exists():
            return None
        scales = graph.with_name(graph.stem + TOKEN_SCALES)
        return cls(np.load(rows, allow_pickle=False), np.load(scales, allow_pickle=False) if scales.exists() else None)

    def save_beside(self, graph: Path) -> list[Path]:
        paths = [graph.with_name(graph.stem + TOKEN_TABLE)]
        np.save(paths[0], self.rows, allow_pickle=False)
        if self.scales is not None:
            paths.append(graph.with_name(graph.stem + TOKEN_SCALES))
            np.save(paths[1], self.scales, allow_pickle=False)
        return paths

    @property
    def dtype(self) -> str:
        return {"float32": "fp32", "float16": "fp16", "int8": "int8"}[self.rows.dtype.name]

    def lookup(self, input_ids: np.ndarray) -> np.ndarray:
        """[B, L] ids -> [B, L, D] float32 embeddings, what the app feeds the graph."""
        if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= len(self.rows)):
            raise LitetextError(f"token ids must lie in 0..{len(self.rows) - 1} (this table's vocabulary)")
        rows = self.rows[input_ids].astype(np.float32)
        return rows * self.scales[input_ids][..., None] if self.scales is not None else rows


class LiteRTRunner(Runner):
    runtime = "litert"

    def __init__(self, path: str | Path, spec: GraphSpec, precision: str = "fp32", threads: int | None = None):
        super().__init__(spec, precision)
        path = Path(path)
        self.interpreter = open_interpreter(path, threads)
        self.table = TokenTable.beside(path)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise LitetextError(f"{path} has no {SIGNATURE!r} signature (has {list(signatures)})")
        self.graph_inputs = list(signatures[SIGNATURE]["inputs"])
        wanted = [EMBEDDINGS_INPUT if self.table and n == "input_ids" else n for n in spec.input_names]
        if sorted(self.graph_inputs) != sorted(wanted):
            raise LitetextError(f"{path} has inputs {self.graph_inputs}, the manifest says {wanted}")
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        details = self.runner.get_input_details()
        self.input_dtypes = {name: d["dtype"] for name, d in details.items()}
        # A fully quantized graph may take and give int8 tensors: (q - zero_point) * scale, as an app does.
        self.input_quant = {name: d["quantization"] for name, d in details.items() if d["quantization"][0]}
        self.output_quant = {name: d["quantization"] for name, d in self.runner.get_output_details().items()
                             if d["quantization"][0]}
        self.batch = int(next(iter(details.values()))["shape"][0])
        outputs = list(signatures[SIGNATURE]["outputs"])
        # The converter names outputs output_0, output_1, ... in the module's return order.
        self.output_keys = sorted(outputs, key=lambda k: int(k.rsplit("_", 1)[1]))
        if len(self.output_keys) != len(spec.outputs):
            raise LitetextError(f"{path} has {len(outputs)} outputs, the manifest says {spec.output_names}")

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.table is not None:
            feed = {**feed, EMBEDDINGS_INPUT: self.table.lookup(feed["input_ids"])}
            del feed["input_ids"]
        n = len(next(iter(feed.values())))
        chunks = []
        for start in range(0, n, self.batch):
            part = {k: v[start : start + self.batch] for k, v in feed.items()}
            short = self.batch - len(next(iter(part.values())))
            if short:
                part = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in part.items()}
            result = self.runner(**{k: self._to_graph(k, v) for k, v in part.items()})
            chunks.append([self._from_graph(key, result[key][: self.batch - short]) for key in self.output_keys])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(self.output_keys))]

    def _to_graph(self, name: str, value: np.ndarray) -> np.ndarray:
        dtype = self.input_dtypes[name]
        if name in self.input_quant and value.dtype.kind == "f":
            scale, zero = self.input_quant[name]
            info = np.iinfo(dtype)
            value = np.clip(np.round(value / scale) + zero, info.min, info.max)
        return np.ascontiguousarray(value, dtype=dtype)

    def _from_graph(self, name: str, value: np.ndarray) -> np.ndarray:
        if name in self.output_quant:
            scale, zero = self.output_quant[name]
            return ((value.astype(np.float32) - zero) * scale).astype(np.float32)
        return value.astype(np.float32)

    def close(self) -> None:
        self.runner = self.interpreter = None
