"""Export the full-size text encoders (teacher, S0, S1, L) and S0's vision encoder and heads at 1008 px,
recording export time, file sizes and parity against PyTorch, as JSON plus a printed table.

Weights are RANDOM (seed 0, --init stress by default): no checkpoint can be downloaded here. S0 goes through a
transformers-format checkpoint folder written first, so the loading path users take is the one measured; the other
text encoders are loaded alone (the text part of the full model's weights).

    python benchmarks/export_full_size.py --prompts ../shared/data/prompts/eval --json benchmarks/results/export_full_size.json
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
from pathlib import Path

import numpy as np

from litetext.calibration.data import read_prompts, seeded_sample
from litetext.export import export_bundle
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.models.loading import load_model, random_weights_label

TEXT_MODELS = [("sam3", 32), ("litetext-s0", 16), ("litetext-s1", 16), ("litetext-l", 16)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokenizer_json_agreement(bundle: Path, prompts: list[str], ctx: int, pad_id: int) -> dict:
    from tokenizers import Tokenizer

    from litetext.tokenizer import ClipTokenizer

    ours = ClipTokenizer()(prompts, ctx, pad_id).input_ids
    theirs = np.array([e.ids for e in Tokenizer.from_file(str(bundle / "tokenizer.json")).encode_batch(prompts)])
    differ = int((ours != theirs).any(axis=1).sum())
    return {"prompts": len(prompts), "differing": differ}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", nargs="+", required=True, help="held-out prompt files or folders")
    parser.add_argument("--work", default="benchmarks/work", help="scratch folder for checkpoints and bundles")
    parser.add_argument("--json", default="benchmarks/results/export_full_size.json")
    parser.add_argument("--count", type=int, default=1000, help="held-out prompts to measure on (seeded sample)")
    parser.add_argument("--skip-vision", action="store_true", help="text encoders only")
    parser.add_argument("--text-models", default=",".join(p for p, _ in TEXT_MODELS),
                        help="text encoders to export, in this order")
    parser.add_argument("--s0-image-graphs", default="vision_encoder,heads",
                        help="S0's image graphs to export (the 1008 px vision encoder takes >10 GiB: 'heads' skips it)")
    parser.add_argument("--init", default="stress", choices=["stress", "transformers"],
                        help="random weights: stress (every layer matters) or transformers' own initialisation")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(args.prompts)
    prompts = seeded_sample(prompts, args.count)
    rows = []

    def record(name, loaded, manifest, graph, extra=None):
        g = manifest["graphs"][graph]
        parity = g["parity"]["outputs"]
        rows.append({
            "model": name, "graph": graph, "weights": loaded.weights_label, "context_length": manifest["context_length"],
            "precision": manifest["precision"], "bytes": g["bytes"], "export_seconds": g["export_seconds"],
            "total_seconds": manifest["export_seconds"], "parity": parity, "peak_rss_mib": round(peak_rss_mib()),
            **(extra or {}),
        })

    contexts = dict(TEXT_MODELS)
    for preset in args.text_models.split(","):
        ctx = contexts[preset]
        print(f"== {preset} text encoder (context {ctx})", flush=True)
        if preset == "litetext-s0":
            checkpoint = work / f"checkpoint-litetext-s0-{args.init}"
            if not (checkpoint / "config.json").exists():
                load_model(preset, random_init=True, seed=0, init=args.init).model.save_pretrained(checkpoint)
            loaded = load_model(checkpoint=checkpoint)
        else:
            loaded = load_model(preset, random_init=True, seed=0, init=args.init, context_length=ctx,
                                graphs=["text_encoder"])
        out = work / f"{preset}-text"
        manifest = export_bundle(loaded, out, graphs=["text_encoder"], context_length=ctx, parity_prompts=prompts,
                                 force=True, progress=lambda m: print("  ", m, flush=True))
        agreement = tokenizer_json_agreement(out, prompts, ctx, manifest["text_padding"]["pad_id"])
        record(preset, loaded, manifest, "text_encoder", {"tokenizer_json": agreement})
        if preset == "litetext-s0" and not args.skip_vision:
            image_graphs = args.s0_image_graphs.split(",")
            print(f"== litetext-s0 {' and '.join(image_graphs)} at full size", flush=True)
            manifest = export_bundle(loaded, work / "s0-vision-heads", graphs=image_graphs,
                                     force=True, progress=lambda m: print("  ", m, flush=True))
            for graph in image_graphs:
                record(preset, loaded, manifest, graph)
        del loaded
        gc.collect()
        save(args, rows)  # after each model: a long run keeps what it measured

    print(f"\n{'model':13s} {'graph':15s} {'MiB':>8s} {'export s':>9s} {'max error':>10s} {'min cos':>10s}")
    for r in rows:
        err = max(p["max_abs_error"] for p in r["parity"].values())
        cos = min(p["cosine_min"] for p in r["parity"].values())
        print(f"{r['model']:13s} {r['graph']:15s} {r['bytes'] / 2**20:8.1f} {r['export_seconds']:9.1f} {err:10.2e} {cos:10.6f}")
    print(f"wrote {args.json}")


def save(args, rows: list[dict]) -> None:
    result = {
        "benchmark": "export_full_size", "weights": random_weights_label({"seed": 0, "init": args.init}),
        "command": "python " + " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "tools": tool_versions(),
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)


if __name__ == "__main__":
    main()
