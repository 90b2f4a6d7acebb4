"""INT8 heads at full size (1008 px) on real images: tensor parity and instance agreement against fp32.

Calibrates on prompts from the calibration split and on --calib-images; measures on other images
(--images) with the built-in COCO names. Weights are RANDOM (seed 0) unless --checkpoint is given: random
heads score every query far below 0.5, so the instance agreement is vacuous for them (zero instances on both
sides); the tensor figures still say how faithfully the INT8 graph computes the same function.

Status: on this 2-core, 24 GiB machine the process is killed out of memory during the INT8 export of the
full-size heads (19 to 24 GiB resident in three tries); no figures from it are committed yet.

    python benchmarks/int8_heads.py --calib-prompts ../shared/data/prompts/calib \
        --calib-images ../shared/data/images/astronaut.png ../shared/data/images/coffee.png \
        --images ../shared/data/images/camera.png ../shared/data/images/chelsea.png
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from litetext.calibration.data import read_prompts
from litetext.export import export_bundle, tool_versions
from litetext.export.bundle import write_json_atomic
from litetext.models.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib-prompts", nargs="+", required=True)
    parser.add_argument("--calib-images", nargs="+", required=True)
    parser.add_argument("--images", nargs="+", required=True, help="images to measure on (not calibrated on)")
    parser.add_argument("--model", default="litetext-s0")
    parser.add_argument("--checkpoint")
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--json", default="benchmarks/results/int8_heads.json")
    args = parser.parse_args()

    loaded = (load_model(args.model, checkpoint=args.checkpoint) if args.checkpoint
              else load_model(args.model, random_init=True, seed=0))
    manifest = export_bundle(
        loaded, Path(args.work) / "int8-heads", graphs=["heads"], precision="int8",
        calib_prompts=read_prompts(args.calib_prompts), calib_images=args.calib_images,
        parity_images=args.images, force=True, progress=lambda m: print("  ", m, flush=True),
    )
    graph = manifest["graphs"]["heads"]
    result = {
        "benchmark": "int8_heads", "model": args.model, "weights": loaded.weights_label,
        "bytes": graph["bytes"], "parity": graph["parity"], "calibration": graph["calibration"],
        "machine": platform.platform(), "tools": tool_versions(),
        "command": "python benchmarks/int8_heads.py --calib-prompts " + " ".join(args.calib_prompts)
                   + " --calib-images " + " ".join(args.calib_images) + " --images " + " ".join(args.images),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.json), result)
    for name, fig in graph["parity"]["outputs"].items():
        print(f"{name:16s} cos mean {fig['cosine_mean']:.5f}  worst 1% {fig['cosine_worst_1pct']:.5f}  "
              f"max err {fig['max_abs_error']:.3g} (ref max {fig['max_abs_reference']:.3g})")
    print("instances:", graph["parity"]["instances"])
    print(f"{graph['bytes'] / 2**20:.1f} MiB; kept fp32: {graph['calibration']['layers_kept_fp32']}; wrote {args.json}")


if __name__ == "__main__":
    main()
