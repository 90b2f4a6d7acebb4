"""The trained fixture (fixtures/shapes-s0) on held-out rendered scenes, side by side in one run: eager PyTorch,
ONNX fp32 and ONNX INT8 (all three graphs), each against the scenes' true instances, and INT8 against fp32.

Scenes 0..N-1 (training used ids from 10**8 up); every prompt of each scene (those naming something present,
and two naming nothing present). Targets (issue 15): matched mask IoU mean >= 0.75, >= 90% of true instances
found at score 0.5, prompts naming nothing present give no instance in >= 90% of cases.

    python benchmarks/fixture.py            # -> benchmarks/results/fixture.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from litetext.export import export_bundle
from litetext.export.manifest import tool_versions
from litetext.files import sha256_of, write_bytes_atomic
from litetext.fixture.evaluate import TARGETS, evaluate, torch_predictions
from litetext.fixture.model import IMAGE_SIZE, fixture_path, load_fixture
from litetext.fixture.scenes import render_scene, save_scene_png, vocabulary
from litetext.predict import Predictor

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(fixture_path()), help="fixture model folder")
    parser.add_argument("--scenes", type=int, default=200, help="held-out scenes (ids 0..N-1)")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "fixture.json"))
    args = parser.parse_args()

    loaded = load_fixture(args.checkpoint)
    runs: dict[str, dict] = {}
    found_by: dict[str, dict] = {}

    def recording(name, predict):
        def wrapped(scene):
            found = predict(scene)
            found_by.setdefault(name, {})[scene.seed] = found
            return found
        return wrapped

    t0 = time.perf_counter()
    runs["torch fp32"] = evaluate(recording("torch fp32", torch_predictions(loaded)), args.scenes, IMAGE_SIZE)
    runs["torch fp32"]["seconds"] = round(time.perf_counter() - t0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # the export's heads parity pairs image i with prompts 2i and 2i + 1: two prompts naming something
        # present per scene, over 8 scenes, so that its instance gate judges dozens of instances, not two
        parity_ids = range(10**7 + 100, 10**7 + 108)
        parity = [tmp / f"parity_{i}.png" for i in parity_ids]
        calib = [tmp / f"calib_{i}.png" for i in range(10**7, 10**7 + 4)]
        for path in parity + calib:
            save_scene_png(render_scene(int(path.stem.split("_")[1]), IMAGE_SIZE), path)
        prompts = [p for i in parity_ids for p in [q for q in render_scene(i, IMAGE_SIZE).prompts
                                                   if render_scene(i, IMAGE_SIZE).answer(q)][:2]]
        for precision in ("fp32", "int8"):
            extra = dict(calib_prompts=vocabulary(), calib_images=calib) if precision == "int8" else {}
            manifest = export_bundle(loaded, tmp / precision, precision=precision, parity_prompts=prompts,
                                     parity_images=parity, **extra)
            predictor = Predictor(tmp / precision)
            name = f"onnx {precision}"
            t0 = time.perf_counter()
            runs[name] = evaluate(recording(name, lambda s: predictor.predict_prompts(s.image, s.prompts)),
                                  args.scenes, IMAGE_SIZE)
            runs[name]["seconds"] = round(time.perf_counter() - t0, 1)
            runs[name]["bundle_bytes"] = sum(g["bytes"] for g in manifest["graphs"].values())
            runs[name]["export_heads_instances"] = manifest["graphs"]["heads"]["parity"]["instances"]
    from litetext.fixture.demo import instance_agreement_of

    agreement = {"onnx int8 vs onnx fp32": _agreement(found_by["onnx fp32"], found_by["onnx int8"],
                                                      instance_agreement_of),
                 "onnx fp32 vs torch fp32": _agreement(found_by["torch fp32"], found_by["onnx fp32"],
                                                       instance_agreement_of)}
    fixture_json = json.loads((Path(args.checkpoint) / "FIXTURE.json").read_text()) \
        if (Path(args.checkpoint) / "FIXTURE.json").is_file() else {}
    result = {
        "benchmark": "fixture",
        "weights": {"label": loaded.weights_label, "path": args.checkpoint,
                    "model.safetensors sha256": sha256_of(Path(args.checkpoint) / "model.safetensors"),
                    "trained_with": fixture_json.get("command")},
        "scenes": {"held_out_ids": f"0..{args.scenes - 1}", "image_size": IMAGE_SIZE},
        "targets": TARGETS,
        "runs": runs,
        "agreement": agreement,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "tools": tool_versions(),
        "command": "python benchmarks/fixture.py" + ("" if args.scenes == 200 else f" --scenes {args.scenes}"),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(args.json, (json.dumps(result, indent=2) + "\n").encode())
    print(f"{'run':12s} {'mask IoU':>9s} {'found':>7s} {'absent empty':>13s} {'extra':>6s} {'seconds':>8s}")
    print(f"{'target':12s} {TARGETS['matched_mask_iou_mean']:9.2f} {TARGETS['found_share']:7.2f} "
          f"{TARGETS['absent_empty_share']:13.2f}")
    for name, r in runs.items():
        iou = "-" if r["matched_mask_iou_mean"] is None else f"{r['matched_mask_iou_mean']:.3f}"
        print(f"{name:12s} {iou:>9s} {r['found_share']:7.3f} {r['absent_empty_share']:13.3f} "
              f"{r['extra_instances']:6d} {r['seconds']:8.1f}")
    for name, a in agreement.items():
        iou, err = (f"{a[k]:.4f}" if a[k] is not None else "n/a" for k in ("mask_iou_mean", "score_max_abs_error"))
        print(f"{name}: matched {a['matched']} of {a['reference_instances']}, lost {a['lost']}, gained {a['gained']}, "
              f"mask IoU mean {iou}, score max error {err}")
    print(f"-> {args.json}")


def _agreement(reference: dict, candidate: dict, agree) -> dict:
    """Instance agreement over every scene and prompt (pooled)."""
    parts = [agree(reference[seed], candidate[seed]) for seed in reference]
    ious = [p["mask_iou_mean"] * p["matched"] for p in parts if p["matched"]]
    matched = sum(p["matched"] for p in parts)
    return {"reference_instances": sum(p["reference_instances"] for p in parts),
            "candidate_instances": sum(p["candidate_instances"] for p in parts), "matched": matched,
            "lost": sum(p["lost"] for p in parts), "gained": sum(p["gained"] for p in parts),
            "mask_iou_mean": float(np.sum(ious) / matched) if matched else None,
            "score_max_abs_error": max((p["score_max_abs_error"] or 0.0) for p in parts) if matched else None}


if __name__ == "__main__":
    main()
