"""How much the full-size heads' outputs move when every heads weight is rounded to fp16 (everything else in
fp32), under the stress initialisation and under transformers' own: a measure of how ill-conditioned random
weights make the graph, apart from any export.

Reduced-precision heads exports (ONNX INT8, LiteRT fp16) of EV-M failed their gates under stress weights at
1008 px with one signature (pred_logits cosine near 0.5, 129 instances gained on 1); this showed the weights were to
blame (pred_logits 0.926 with fp16-rounded heads weights): the features fed to the heads reached 3.5e8 while the
trunk's BatchNorm statistics were probed on random pixels. With the photo probe (litetext/models/stress_init.py)
the same measure gives 1.00000. Images and prompts: --images, each with two of the built-in COCO names.

    python benchmarks/heads_conditioning.py --images ../shared/data/images/camera.png ../shared/data/images/chelsea.png
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from litetext.calibration.data import builtin_prompts, read_images
from litetext.calibration.feeds import RealInputs
from litetext.calibration.parity import output_parity
from litetext.export.manifest import tool_versions
from litetext.files import write_json_atomic
from litetext.models.graphs import build_graph, describe_graphs, get_padding, model_geometry
from litetext.models.heads_semantics import heads_semantics_of
from litetext.models.loading import load_model
from litetext.runtimes.torch_runner import TorchRunner

CONTEXT = 16


def measure(preset: str, init: str, images: list) -> dict:
    loaded = load_model(preset, random_init=True, seed=0, init=init)
    padding = get_padding("upstream")
    specs = describe_graphs(loaded, CONTEXT, padding)
    runners = {g: TorchRunner(build_graph(g, loaded, CONTEXT, padding), specs[g])
               for g in ("text_encoder", "vision_encoder", "heads")}
    inputs = RealInputs(builtin_prompts()[: 2 * len(images)], images)
    feeds = inputs.heads(CONTEXT, padding, model_geometry(loaded).image_size, 2, runners["text_encoder"],
                         runners["vision_encoder"], heads_semantics_of(loaded)).feeds
    reference = [runners["heads"].infer(f) for f in feeds]
    with torch.no_grad():
        for parameter in runners["heads"].module.parameters():
            parameter.copy_(parameter.half().float())
    rounded = [runners["heads"].infer(f) for f in feeds]
    return {"model": preset, "init": init, "weights": loaded.weights_label,
            "samples": sum(len(f["text_features"]) for f in feeds),
            "outputs": output_parity(reference, rounded, feeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientsam3-ev-m")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--json", default="benchmarks/results/heads_conditioning.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = read_images(args.images)
    rows = [measure(args.model, init, images) for init in ("stress", "transformers")]
    result = {"benchmark": "heads_conditioning",
              "what": "full-size heads, eager PyTorch fp32: outputs with every heads weight rounded to fp16 against "
                      "the same weights in fp32 (vision and text encoders fp32), two prompts per image",
              "images": [str(p) for p in args.images], "machine": platform.platform(), "tools": tool_versions(),
              "rows": rows,
              "command": f"python benchmarks/heads_conditioning.py --model {args.model} --images {' '.join(args.images)}"}
    write_json_atomic(Path(args.json), result)
    print(f"{'init':12s} {'output':16s} {'cos mean':>9s} {'cos min':>9s} {'max err':>9s} {'max |ref|':>9s}")
    for row in rows:
        for name, f in row["outputs"].items():
            print(f"{row['init']:12s} {name:16s} {f['cosine_mean']:9.5f} {f['cosine_min']:9.5f} "
                  f"{f['max_abs_error']:9.3g} {f['max_abs_reference']:9.3g}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
