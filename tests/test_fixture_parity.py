"""Instance-level parity on the trained fixture (fixtures/shapes-s0): rendered scenes whose instances the model
finds, so every check compares real, non-empty sets of instances."""

from dataclasses import replace

import pytest
import torch

from litetext.calibration.parity import instances_agree, passes
from litetext.export import export_bundle
from litetext.fixture.model import IMAGE_SIZE
from litetext.fixture.scenes import render_scene, save_scene_png, vocabulary
from litetext.models.graphs import build_graph, describe_graphs, get_padding

HELD_OUT = (0, 1, 2, 3)  # scene ids the fixture never trained on


@pytest.fixture(scope="module")
def scene_data(tmp_path_factory):
    """Held-out scenes as PNGs, prompts ordered so that the heads' parity batches (image i with prompts 2i and
    2i + 1) ask each image about two things it holds, and calibration scenes (other ids)."""
    folder = tmp_path_factory.mktemp("scenes")
    images, prompts = [], []
    for i in HELD_OUT:
        scene = render_scene(i, IMAGE_SIZE)
        save_scene_png(scene, folder / f"scene_{i}.png")
        images.append(folder / f"scene_{i}.png")
        prompts += [p for p in scene.prompts if scene.answer(p)][:2]
    calib = []
    for i in range(10**7, 10**7 + 3):
        save_scene_png(render_scene(i, IMAGE_SIZE), folder / f"calib_{i}.png")
        calib.append(folder / f"calib_{i}.png")
    return images, prompts, calib


# every target's heads: ONNX Runtime runs ONNX and TensorRT's Q/DQ graphs here; Core ML's compression is
# simulated in PyTorch off macOS (litetext.export.coreml.simulate)
HEADS_EXPORTS = [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("tensorrt", "fp16"), ("tensorrt", "int8"),
                 ("coreml", "fp16"), ("coreml", "w8")]  # Core ML w8a8 is for the text encoder only


@pytest.mark.parametrize("target,precision", HEADS_EXPORTS, ids=[f"{t}-{p}" for t, p in HEADS_EXPORTS])
def test_exported_heads_keep_the_instances(fixture_model, scene_data, tmp_path, target, precision):
    images, prompts, calib = scene_data
    calibrated = precision in ("int8", "w8a8")
    extra = dict(calib_prompts=vocabulary(), calib_images=calib) if calibrated else {}
    manifest = export_bundle(fixture_model, tmp_path / precision, target=target, graphs=["heads"],
                             precision=precision, parity_prompts=prompts, parity_images=images, **extra)
    outputs = manifest["graphs"]["heads"]["parity"]["outputs"]
    assert outputs["pred_masks"]["count"] == len(images) * 2  # two prompts on each image
    agreement = manifest["graphs"]["heads"]["parity"]["instances"]
    assert agreement["reference_instances"] >= len(images)  # every parity image shows instances
    assert agreement["candidate_instances"] >= len(images)
    assert instances_agree(agreement)
    if precision == "fp32":
        assert agreement["lost"] == agreement["gained"] == 0
        assert agreement["mask_iou_mean"] > 0.995 and agreement["score_max_abs_error"] < 1e-3
    else:
        assert agreement["lost"] + agreement["gained"] <= 0.1 * agreement["reference_instances"]
        assert agreement["mask_iou_mean"] >= (0.98 if precision == "fp16" else 0.9)
        # INT8 heads move a score by up to 0.18 on these scenes (0.44 at worst over the 3,377 instances of
        # benchmarks/results/fixture.json): weight-and-activation INT8 of a 32-wide decoder is coarse
        assert agreement["score_max_abs_error"] < (0.02 if precision == "fp16" else 0.25)


class OffsetMasks(torch.nn.Module):
    """A broken heads export: every mask logit moved by `offset` (a lost bias), so every mask shrinks. Measured on
    the fixture with -4: the masks' cosine stays 0.994 (worst 0.992) while 2 of 12 instances are lost and the
    matched mask IoU falls to 0.88. (Moving the masks one cell, 3.5 px, is caught by the cosine gate itself on
    trained masks.)"""

    def __init__(self, heads, offset):
        super().__init__()
        self.heads, self.offset = heads, offset

    def forward(self, *inputs):
        logits, boxes, masks, presence = self.heads(*inputs)
        return logits, boxes, masks + self.offset, presence


class ScaledPresence(torch.nn.Module):
    """A broken heads export: the presence logit scaled down (a lost dequantization scale): same sign, so its
    per-sample cosine is 1, but scores fall below the threshold."""

    def __init__(self, heads):
        super().__init__()
        self.heads = heads

    def forward(self, *inputs):
        logits, boxes, masks, presence = self.heads(*inputs)
        return logits, boxes, masks, presence * 0.05


@pytest.mark.parametrize("broken", ["mask logits offset", "presence scaled"])
def test_broken_heads_pass_the_cosine_gate_but_fail_the_instance_gate(fixture_model, scene_data, tmp_path, broken):
    from litetext.calibration.feeds import RealInputs, graph_parity
    from litetext.export.onnx import export_graph
    from litetext.export.pipeline import _example
    from litetext.models.graphs import model_geometry
    from litetext.models.heads_semantics import heads_semantics_of
    from litetext.runtimes.onnxruntime_runner import OnnxRuntimeRunner
    from litetext.runtimes.torch_runner import TorchRunner

    images, prompts, _ = scene_data
    padding = get_padding("upstream")
    specs = describe_graphs(fixture_model, 16, padding)
    spec = specs["heads"]
    heads = build_graph("heads", fixture_model, 16, padding)
    module = OffsetMasks(heads, -4.0) if broken.startswith("mask") else ScaledPresence(heads)
    text, vision = (TorchRunner(build_graph(g, fixture_model, 16, padding), specs[g])
                    for g in ("text_encoder", "vision_encoder"))
    feeds = RealInputs(prompts, images).heads(16, padding, model_geometry(fixture_model).image_size, 2, text, vision,
                                              heads_semantics_of(fixture_model))
    path = export_graph(module.eval(), spec, _example(feeds.feeds), tmp_path / "heads.onnx", "fp32")
    reference, candidate = TorchRunner(heads, spec), OnnxRuntimeRunner(path, spec, "fp32")
    figures = graph_parity("heads", [reference.infer(f) for f in feeds.feeds],
                           [candidate.infer(f) for f in feeds.feeds], feeds)
    int8_gate = spec.tolerance["int8"]  # judged by direction, as INT8 heads are
    assert all(passes(f, int8_gate) for f in figures["outputs"].values()), figures["outputs"]
    if broken == "presence scaled":  # even the strict fp32 cosine bound (0.9999) does not see it
        assert passes(figures["outputs"]["presence_logits"], replace(spec.tolerance["fp32"], atol=None))
    agreement = figures["instances"]
    assert agreement["reference_instances"] >= len(images)
    assert not instances_agree(agreement), agreement


def test_bench_parity_counts_the_fixtures_instances(fixture_model, scene_data, tmp_path):
    """`litetext bench` judges an INT8 heads bundle against eager PyTorch on instances that exist."""
    from litetext.benchmarks import BundleTarget, TimingOptions, TorchTarget, run_bench

    images, prompts, calib = scene_data
    export_bundle(fixture_model, tmp_path / "int8", graphs=["text_encoder", "vision_encoder", "heads"],
                  precision="int8", calib_prompts=vocabulary(), calib_images=calib, parity_prompts=prompts,
                  parity_images=images)
    (record,) = run_bench([BundleTarget(tmp_path / "int8")], graphs=["heads"], batches=[2], prompts=prompts,
                          images=images, reference=TorchTarget.from_loaded(fixture_model), memory=False,
                          timing=TimingOptions(warmup=0, min_runs=1, min_seconds=0.0), threshold=0.5)
    assert record["status"] == "ok", record["error"]
    agreement = record["parity"]["instances"]
    assert agreement["reference_instances"] >= len(images) and agreement["candidate_instances"] >= len(images)
    assert instances_agree(agreement), agreement
    assert agreement["mask_iou_mean"] >= 0.9
