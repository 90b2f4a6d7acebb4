"""Memory probe: load one graph in a FRESH Python process and report what the load cost in resident memory.

    python -m litetext.benchmarks.probe '{"kind": "bundle", "path": "out/s0", "graph": "text_encoder"}'

prints one JSON line. The child imports what the job needs first; its resident set size (VmRSS) then is the
baseline. It resets the peak (VmHWM, via /proc/self/clear_refs) where Linux allows, loads, and reports:

    rss_after_load  what the load added and holds (MiB): anonymous memory (RssAnon: weights, arenas) plus the
                    file pages it added (RssFile: an mmapped model). File pages the kernel dropped meanwhile (code
                    of the imported libraries, evicted under memory pressure during a large load) are not
                    subtracted: counting them made this figure negative (-120.9 MiB for a torch row once).
    peak_rss_load   VmHWM during the load minus the baseline (MiB)
    rss_anon_after_load, rss_file_after_load   the two parts, as measured (the file part may be negative)

Jobs: "bundle" (path, graph, threads), "torch" (recipe: load_model keyword arguments, graph, context_length,
text_padding), each with "graphs" (a list) instead of "graph" to hold several graphs at once (a whole
pipeline), and "allocate" (mib: touch a numpy array of that size; used to check the probe itself).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

MIB = 2**20
METHOD = ("fresh subprocess; /proc/self/status, minus the figures after imports: RssAnon + added RssFile "
          "after the load, VmHWM during it")


def read_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process in bytes (Linux)."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so RSS shows what is still held."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _prepare(job: dict[str, Any]):
    """Imports (counted in the baseline), returning a function that does the load and returns what it keeps."""
    kind = job["kind"]
    if kind == "allocate":
        import numpy as np

        return lambda: np.ones(int(job["mib"] * MIB), dtype=np.uint8)  # ones: every page written
    if kind == "bundle":
        import onnxruntime  # noqa: F401

        from litetext.benchmarks.targets import BundleTarget
        from litetext.bundle import Bundle
        from litetext.runtimes.by_target import runner_factory

        runner_factory(Bundle.open(job["path"]).manifest["target"])  # the runtime's modules
        graphs = job.get("graphs") or [job["graph"]]  # several: a whole pipeline's graphs, all held at once
        return lambda: [BundleTarget(job["path"], threads=job.get("threads")).open_runner(g) for g in graphs]
    if kind == "torch":
        import torch  # noqa: F401
        from transformers import Sam3LiteTextModel, Sam3Model  # noqa: F401  (lazy modules: import now)

        from litetext.models.graphs import build_graph, describe_graphs, get_padding
        from litetext.models.loading import load_model
        from litetext.runtimes.torch_runner import TorchRunner

        def load():
            graphs = job.get("graphs") or [job["graph"]]
            loaded = load_model(**job["recipe"], graphs=graphs)  # a text encoder alone: only it
            padding = get_padding(job["text_padding"])
            ctx = job["context_length"]
            specs = describe_graphs(loaded, ctx, padding)
            runners = [TorchRunner(build_graph(g, loaded, ctx, padding), specs[g]) for g in graphs]
            del loaded  # keep only what the graphs use (the heads graph holds the whole model)
            return runners

        return load
    raise ValueError(f"unknown probe job kind {kind!r}")


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run in the fresh process: baseline, load, measure."""
    import gc

    load = _prepare(job)
    gc.collect()
    _trim_heap()
    peak_reset = reset_peak()
    before = read_status()
    kept = load()
    gc.collect()
    _trim_heap()
    after = read_status()
    result = load_figures(before, after)
    if not peak_reset:
        result["note"] = "the peak could not be reset after imports: peak_rss_load may include import-time peaks"
    del kept
    return result


def load_figures(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """The probe's figures (MiB) from /proc/self/status before and after a load (see the module docstring)."""
    anon = after.get("RssAnon", after["VmRSS"]) - before.get("RssAnon", before["VmRSS"])
    files = after.get("RssFile", 0) - before.get("RssFile", 0)
    result = {
        "baseline_rss": before["VmRSS"] / MIB,
        "rss_after_load": (anon + max(files, 0)) / MIB,
        "peak_rss_load": (after["VmHWM"] - before["VmRSS"]) / MIB,
        "rss_anon_after_load": anon / MIB,
        "rss_file_after_load": files / MIB,
        "method": METHOD,
    }
    if files < 0:
        result["file_pages_dropped"] = (f"{-files / MIB:.1f} MiB of file pages (library code) left memory during "
                                        "the load; not subtracted from rss_after_load")
    return result


def probe_memory(job: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Run `job` in a fresh `python -m litetext.benchmarks.probe` and return its figures (MiB), or
    {"error": reason} when the child failed."""
    try:
        done = subprocess.run([sys.executable, "-m", "litetext.benchmarks.probe", json.dumps(job)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe failed (exit {done.returncode}): {tail}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    job = json.loads(argv[0])
    try:
        result = run_job(job)
    except Exception as e:  # reported to the parent as one line
        message = str(e).strip().splitlines()
        print(f"{type(e).__name__}: {message[0] if message else ''}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
