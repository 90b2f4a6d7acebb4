"""How much a full-size model's outputs move when its weights are rounded to fp16 (computing in fp32), under the
stress initialisation and under transformers' own: how ill-conditioned random weights make each graph, apart
from any export. Two measures per model: the vision encoder's features (every vision weight rounded) on the
--images photos, and the heads' outputs (every heads weight rounded, fed by the fp32 encoders), each photo with
two of the built-in COCO names.

Reduced-precision heads exports (ONNX INT8, LiteRT fp16) of EV-M failed their gates under stress weights at
1008 px with one signature (pred_logits cosine near 0.5, 129 instances gained on 1); this showed the weights were to
blame (heads pred_logits 0.926 with fp16-rounded heads weights): the features fed to the heads reached 3.5e8 while
the trunk's BatchNorm statistics were probed on random pixels. With the photo probe (litetext/models/stress_init.py)
the heads measure gives 1.00000; the vision measure shows what remains (RepViT and TinyViT trunks).

    python benchmarks/conditioning.py --model efficientsam3-ev-m efficientsam3-rv-m efficientsam3-tv-m \
        --images ../shared/data/images/camera.png ../shared/data/images/coffee.png
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
    size = model_geometry(loaded).image_size
    inputs = RealInputs(builtin_prompts()[: 2 * len(images)], images)
    vision_feeds = inputs.vision(size, 1).feeds
    vision_reference = [runners["vision_encoder"].infer(f) for f in vision_feeds]
    heads_feeds = inputs.heads(CONTEXT, padding, size, 2, runners["text_encoder"], runners["vision_encoder"],
                               heads_semantics_of(loaded)).feeds
    heads_reference = [runners["heads"].infer(f) for f in heads_feeds]
    with torch.no_grad():  # every weight of the model (the heads graph holds it all); the encoders' feeds are made
        for parameter in loaded.model.parameters():
            parameter.copy_(parameter.half().float())
    return {"model": preset, "init": init, "weights": loaded.weights_label, "image_size": size,
            "heads_samples": sum(len(f["text_features"]) for f in heads_feeds),
            "vision_encoder": output_parity(vision_reference, [runners["vision_encoder"].infer(f) for f in vision_feeds],
                                            vision_feeds),
            "heads": output_parity(heads_reference, [runners["heads"].infer(f) for f in heads_feeds], heads_feeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["efficientsam3-ev-m"])
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--json", default="benchmarks/results/conditioning.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = read_images(args.images)
    rows = []
    for preset in args.model:
        for init in ("stress", "transformers"):
            rows.append(measure(preset, init, images))
            write_json_atomic(Path(args.json), {
                "benchmark": "conditioning",
                "what": "full-size graphs, eager PyTorch: outputs with every weight rounded to fp16 (computing in fp32) "
                        "against fp32 weights; vision encoder on the images, heads fed by the fp32 encoders with two "
                        "prompts per image",
                "images": [str(p) for p in args.images], "machine": platform.platform(), "tools": tool_versions(),
                "rows": rows,
                "command": f"python benchmarks/conditioning.py --model {' '.join(args.model)} "
                           f"--images {' '.join(args.images)}"})
    print(f"{'model':20s} {'init':12s} {'graph':15s} {'output':16s} {'cos mean':>9s} {'cos min':>9s} {'max err':>9s} "
          f"{'max |ref|':>9s}")
    for row in rows:
        for graph in ("vision_encoder", "heads"):
            for name, f in row[graph].items():
                print(f"{row['model']:20s} {row['init']:12s} {graph:15s} {name:16s} {f['cosine_mean']:9.5f} "
                      f"{f['cosine_min']:9.5f} {f['max_abs_error']:9.3g} {f['max_abs_reference']:9.3g}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
