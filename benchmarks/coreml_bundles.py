"""Core ML bundles of all three graphs (text encoder, vision encoder, heads) at fp16 and w8, made the way users
make them: from a transformers-format checkpoint folder, with `export_bundle`. Records per graph the package
size, the w8 / fp16 ratio, the compression ops the package holds and the simulated parity (Core ML cannot predict
on Linux: the package's compression applied to the PyTorch graph, fp16 compute; see docs/coreml.md).

Weights are RANDOM (seed 0, --init stress by default), written once per initialisation as a transformers-format
checkpoint folder and loaded from it.
Text parity on --count held-out prompts; vision and heads parity on --images (each with two built-in prompts).

    python benchmarks/coreml_bundles.py --prompts ../shared/data/prompts/eval --images ../shared/data/images/camera.png
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
from pathlib import Path

from litetext.calibration.data import read_prompts, seeded_sample
from litetext.export import export_bundle
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.models.loading import load_model, random_weights_label


def checkpoint_folder(work: Path, init: str) -> Path:
    """A transformers-format S0 checkpoint with random weights (seed 0, `init`), written once."""
    folder = work / f"checkpoint-litetext-s0-{init}"
    if not (folder / "config.json").exists():
        load_model("litetext-s0", random_init=True, seed=0, init=init).model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", nargs="+", required=True, help="held-out prompt files or folders")
    parser.add_argument("--images", nargs="+", required=True, help="images for vision encoder and heads parity")
    parser.add_argument("--count", type=int, default=1000, help="held-out prompts to measure on (seeded sample)")
    parser.add_argument("--precisions", default="fp16,w8")
    parser.add_argument("--init", default="stress", choices=["stress", "transformers"],
                        help="random weights: stress (every layer matters) or transformers' own initialisation")
    parser.add_argument("--graphs", default="text_encoder,heads,vision_encoder", help="in this order (the slowest last)")
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--json", default="benchmarks/results/coreml_bundles.json")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_folder(work, args.init)
    prompts = seeded_sample(read_prompts(args.prompts), args.count)
    rows = []
    for graph in args.graphs.split(","):  # one graph per bundle: each is measured and freed alone
        for precision in args.precisions.split(","):
            loaded = load_model(checkpoint=checkpoint)
            print(f"== {graph} {precision}", flush=True)
            manifest = export_bundle(loaded, work / f"coreml-s0-{graph}-{precision}", target="coreml",
                                     precision=precision, graphs=[graph], parity_prompts=prompts,
                                     parity_images=args.images, force=True,
                                     progress=lambda m: print("  ", m, flush=True))
            g = manifest["graphs"][graph]
            rows.append({"graph": graph, "precision": precision, "bytes": g["bytes"],
                         "compression_ops": g["coreml"]["compression_ops"],
                         "weights_compressed": g["coreml"]["weights_compressed"],
                         "parity": g["parity"]["outputs"], "parity_runtime": g["coreml"]["parity_runtime"],
                         "export_seconds": g["export_seconds"], "total_seconds": manifest["export_seconds"],
                         "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
            del loaded, manifest
            gc.collect()
            save(args, prompts, rows)  # after each bundle: a long run keeps what it measured
    print(table(rows))
    print(f"wrote {args.json}")


def save(args, prompts: list[str], rows: list[dict]) -> None:
    fp16 = {r["graph"]: r["bytes"] for r in rows if r["precision"] == "fp16"}
    for r in rows:
        r["size_vs_fp16"] = r["bytes"] / fp16[r["graph"]] if r["graph"] in fp16 else None
    result = {"benchmark": "coreml_bundles", "model": "litetext-s0", "checkpoint": "transformers-format folder",
              "weights": random_weights_label({"seed": 0, "init": args.init}), "parity_prompts": len(prompts),
              "parity_images": [Path(p).name for p in args.images], "machine": platform.platform(),
              "tools": tool_versions(), "command": "python " + " ".join(sys.argv), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)


def table(rows: list[dict]) -> str:
    lines = ["| graph | precision | package | x fp16 | compression ops | worst output: cosine mean | worst 1% |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['size_vs_fp16']:.3f}" if r["size_vs_fp16"] else "-"
        ops = ", ".join(f"{k} {v}" for k, v in r["compression_ops"].items()) or "-"
        mean = min(f["cosine_mean"] for f in r["parity"].values())
        worst = min(f["cosine_worst_1pct"] for f in r["parity"].values())
        lines.append(f"| {r['graph']} | {r['precision']} | {r['bytes'] / 2**20:.1f} MiB | {ratio} | {ops} | "
                     f"{mean:.6f} | {worst:.6f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
