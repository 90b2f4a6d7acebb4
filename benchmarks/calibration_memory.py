"""Peak memory of one ONNX Runtime calibration pass over a graph, in ONNX Runtime's default node order and in
the priority-based order litetext uses (litetext/calibration/int8.py, _priority_ordered_session).

The MinMax calibrator adds a ReduceMin and a ReduceMax per calibrated tensor; in the default order they run
late and every tensor they read stays alive. Each order runs in a fresh process (peak resident memory from
getrusage), on one batch-1 feed of random inputs (memory depends on shapes, not values).

    litetext export --model litetext-s0 --random-init --graphs heads -o benchmarks/work/s0-heads --force
    python benchmarks/calibration_memory.py benchmarks/work/s0-heads/heads.onnx
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PASS = r"""
import json, resource, sys, time
import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator

path, augmented, order = sys.argv[1:4]
calibrator = create_calibrator(path, None, augmented_model_path=augmented, calibrate_method=CalibrationMethod.MinMax)
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the calibrator's own session
options.execution_order = getattr(ort.ExecutionOrder, order)
session = ort.InferenceSession(augmented, options, providers=["CPUExecutionProvider"])
del calibrator
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rng = np.random.default_rng(0)
feed = {}
for i in session.get_inputs():
    shape = [1 if isinstance(d, str) or d is None else d for d in i.shape]
    feed[i.name] = np.ones(shape, np.int64) if "int" in i.type else rng.standard_normal(shape).astype(np.float32)
start = time.perf_counter()
session.run(None, feed)
print(json.dumps({"order": order, "seconds": time.perf_counter() - start,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_rss_before_run_mib": before / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", help="an fp32 graph (e.g. an exported heads.onnx)")
    parser.add_argument("--json", default="benchmarks/results/calibration_memory.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for order in ("PRIORITY_BASED", "DEFAULT"):
            out = subprocess.run([sys.executable, "-c", PASS, args.onnx, str(Path(scratch) / "augmented.onnx"), order],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                rows.append({"order": order, "failed": out.stderr.strip().splitlines()[-1:], "rc": out.returncode})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    from litetext.export.manifest import tool_versions
    from litetext.files import write_json_atomic

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), {"benchmark": "calibration_memory", "graph": args.onnx,
                                        "calibrator": "MinMax, every float tensor, one batch-1 feed",
                                        "command": "python " + " ".join(sys.argv), "tools": tool_versions(),
                                        "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
