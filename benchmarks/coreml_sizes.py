"""Core ML text encoder: package size and simulated parity per precision, full-size architecture.

Exports the text encoder to one .mlpackage per precision (w4 twice: 4 bits everywhere, and with the layer groups
4 bits harm most on the calibration prompts kept at 8 bits), reads each back (operations, size), checks that the
PyTorch simulation holds the package's compressed weights bit for bit, and measures the simulation against
fp32 PyTorch on 1,000 held-out prompts (seeded sample). w8a8 calibrates its activation scales in PyTorch on
256 prompts drawn evenly across token lengths from the calibration split. Core ML itself cannot predict on
Linux: these are the figures of the same compression computed in PyTorch (fp16), not of the Neural Engine.
Weights are RANDOM (seed 0) unless --checkpoint is given.

    python benchmarks/coreml_sizes.py --calib ../shared/data/prompts/calib --eval ../shared/data/prompts/eval
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path


from litetext.calibration.data import read_prompts, sample_by_length, seeded_sample
from litetext.calibration.int8 import Int8Calibration
from litetext.calibration.parity import passes
from litetext.export import coreml
from litetext.export.coreml import describe as coreml_describe
from litetext.export.coreml import simulate as coreml_simulate
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.models.graphs import build_graph, describe_graphs, get_padding
from litetext.runtimes.torch_runner import TorchRunner
from litetext.tokenizer import ClipTokenizer

from benchmark_args import load_benchmark_model, prompt_arguments

# (precision, deployment target, calibrated): w4 without calibration is 4 bits everywhere; with it, the layer
# groups 4 bits harm most on the calibration prompts stay at 8 bits
ROWS = [("fp32", "iOS17", False), ("fp16", "iOS17", False), ("w8", "iOS17", False), ("w8", "iOS18", False),
        ("w4", "iOS18", False), ("w4", "iOS18", True), ("w8a8", "iOS17", True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prompt_arguments(parser)
    parser.add_argument("--text-padding", default="upstream")
    parser.add_argument("--work", default="benchmarks/work/coreml")
    parser.add_argument("--json", default="benchmarks/results/coreml_sizes.json")
    args = parser.parse_args()

    loaded = load_benchmark_model(args)
    padding = get_padding(args.text_padding)
    ctx = int(loaded.model.config.text_config.max_position_embeddings)
    spec = describe_graphs(loaded, ctx, padding)["text_encoder"]
    graph = build_graph("text_encoder", loaded, ctx, padding)
    tokenizer = ClipTokenizer()

    held_out = read_prompts(args.eval)
    held_out = seeded_sample(held_out, args.eval_count)
    feeds = [{k: v for k, v in b.items() if k in spec.input_names}
             for b in tokenizer(held_out, context_length=ctx, pad_id=padding.pad_id).feeds(50)]
    calib = read_prompts(args.calib)
    chosen = sample_by_length(calib, [min(len(tokenizer.encode(p)) + 2, ctx) for p in calib], 256, seed=0)
    calibration_feeds = tokenizer(chosen, context_length=ctx, pad_id=padding.pad_id).feeds(16)
    example = {k: v[:2] for k, v in feeds[0].items()}
    reference = TorchRunner(graph, spec)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    for precision, target, calibrated in ROWS:
        label = precision + (" mixed" if precision == "w4" and calibrated else "")
        print(f"== {label} ({target})", flush=True)
        path = work / f"text_encoder-{label.replace(' ', '-')}-{target}.mlpackage"
        shutil.rmtree(path, ignore_errors=True)
        calibration = (Int8Calibration(calibration_feeds, "minmax", prompts=len(chosen)) if calibrated else None)
        t0 = time.perf_counter()
        coreml.export_graph(graph, spec, example, path, precision, calibration, deployment_target=target,
                            metadata={"weights": loaded.weights_label})
        export_s = time.perf_counter() - t0
        info = coreml_describe.inspect_package(path)
        t0 = time.perf_counter()
        runner = coreml.simulated_runner(graph, spec, precision, calibration)
        parity = coreml_simulate.measure_parity(reference, runner, feeds)["text_features"]
        simulate_s = time.perf_counter() - t0
        # the gate export_bundle judges this precision by (compressed ones: Core ML's own; else the graph's)
        gate = coreml.TOLERANCES["text_encoder"].get(precision) or spec.tolerance[precision]
        row = {
            "precision": label, "deployment_target": target, "bytes": info["bytes"],
            "compression_ops": {k: v for k, v in info["ops"].items() if k.startswith("constexpr") or k in ("quantize", "dequantize")},
            "simulated_parity": parity, "gate": asdict(gate), "passes_gate": passes(parity, gate),
            "export_seconds": round(export_s, 1), "simulate_seconds": round(simulate_s, 1),
            "fp16_guard": info["metadata"].get("com.litetext.fp16_guard"),
            "fp16_subnormal_constants": info["metadata"].get("com.litetext.fp16_subnormal_constants"),
        }
        if calibration is not None:
            row["calibration"] = {k: v for k, v in calibration.report.items() if k != "activation_scales"}
        if precision in ("w8", "w4", "w8a8"):
            keep = calibration.report.get("layers_kept_8bit", ()) if calibration is not None else ()
            row["weight_agreement"] = coreml_simulate.weight_agreement(path, graph, precision, keep)
        rows.append(row)
        coreml_describe.write_metadata(path, {"parity": {"text_features": parity}, "parity_kind": "simulated in PyTorch"})
    headroom = coreml_simulate.fp16_headroom(graph, spec, feeds)
    by = {(r["precision"], r["deployment_target"]): r for r in rows}
    fp32, fp16 = by[("fp32", "iOS17")]["bytes"], by[("fp16", "iOS17")]["bytes"]
    for r in rows:
        r["size_vs_fp32"], r["size_vs_fp16"] = r["bytes"] / fp32, r["bytes"] / fp16
    result = {
        "benchmark": "coreml_sizes", "graph": "text_encoder", "model": args.model, "weights": loaded.weights_label,
        "context_length": ctx, "text_padding": padding.name, "held_out_prompts": len(held_out),
        "calibration_prompts": len(chosen), "parity": "simulated in PyTorch (fp16 compute, Core ML's compression)",
        "fp16_headroom": headroom,
        "machine": platform.platform(), "tools": tool_versions(), "rows": rows,
        "command": "python benchmarks/coreml_sizes.py --calib " + " ".join(args.calib) + " --eval " + " ".join(args.eval),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)
    print(table(result))
    print(f"wrote {args.json}")


def table(result) -> str:
    lines = ["| precision | target | package | x fp16 | cosine mean | worst 1% | min | max error | weights bit-exact | gate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        p = r["simulated_parity"]
        agreement = r.get("weight_agreement")
        exact = f"{agreement['bit_exact']}/{agreement['package_compressed']}" if agreement else "-"
        lines.append(
            f"| {r['precision']} | {r['deployment_target']} | {r['bytes'] / 2**20:.1f} MiB | {r['size_vs_fp16']:.3f} | "
            f"{p['cosine_mean']:.6f} | {p['cosine_worst_1pct']:.6f} | {p['cosine_min']:.6f} | {p['max_abs_error']:.4f} | {exact} | "
            f"{'pass' if r['passes_gate'] else 'FAIL'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
