"""predict: the exported graphs plus numpy pre/post-processing find the same instances as the transformers
pipeline (the model's forward and Sam3ImageProcessor.post_process_instance_segmentation)."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from litetext.calibration.data import builtin_asset, load_rgb, preprocess_image
from litetext.errors import LitetextError
from litetext.export import export_bundle
from litetext.postprocess import resize_bilinear
from litetext.predict import Predictor
from litetext.tokenizer import ClipTokenizer


def transformers_post_process():
    """transformers' own post-processing function. Its module imports torchvision at the top, which does not
    import beside the CPU torch build here, so the two functions are read from the source and run alone."""
    import transformers.models.sam3 as package

    source = (Path(inspect.getfile(package)).parent / "image_processing_sam3.py").read_text()
    tree = ast.parse(source)
    wanted = {"_scale_boxes", "post_process_instance_segmentation"}
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "image_processing_sam3.py", "exec"), namespace)
    return lambda outputs, **kw: namespace["post_process_instance_segmentation"](None, outputs, **kw)


@pytest.fixture(scope="module", params=["transformers", "upstream"])
def bundle_and_reference(request, tmp_path_factory, tiny_s0):
    padding = request.param
    out = tmp_path_factory.mktemp("predict") / padding
    # The reference is the transformers pipeline, so the heads run the transformers way (no geometry token);
    # upstream heads semantics: tests/test_heads_semantics.py
    export_bundle(tiny_s0, out, text_padding=padding, heads_semantics="transformers")
    return Predictor(out), tiny_s0, padding


def _reference_outputs(loaded, padding, rgb, prompt):
    """The transformers model run as each padding convention runs it."""
    pad_id = 0 if padding == "upstream" else 49407
    tokens = ClipTokenizer()([prompt], 16, pad_id)
    ids, mask = torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)
    pixels = torch.from_numpy(preprocess_image(rgb, 112))
    with torch.no_grad():
        if padding == "transformers":
            return loaded.model(pixel_values=pixels, input_ids=ids, attention_mask=mask)
        # Upstream: the student sees the 0 pads unmasked; the heads still mask them.
        text = loaded.model.get_text_features(input_ids=ids, attention_mask=None)
        return loaded.model(pixel_values=pixels, text_embeds=text, attention_mask=mask)


@pytest.mark.parametrize("prompt", ["cat", "a striped cat lying on a red blanket"])
def test_predict_finds_the_transformers_instances(bundle_and_reference, prompt):
    predictor, loaded, padding = bundle_and_reference
    rgb = load_rgb(builtin_asset("chelsea.png"))
    reference = _reference_outputs(loaded, padding, rgb, prompt)
    scores = (reference.pred_logits.sigmoid() * reference.presence_logits.sigmoid())[0].sort().values.numpy()
    # Random weights give scores in a narrow band: put the threshold in the middle of the widest gap so that
    # a rounding difference cannot move an instance across it.
    gaps = np.diff(scores)
    i = int(np.argmax(gaps[2:-2])) + 2
    threshold = float(scores[i] + gaps[i] / 2)

    want = transformers_post_process()(reference, threshold=threshold, target_sizes=[rgb.shape[:2]])[0]
    got = predictor(rgb, prompt, threshold)
    assert len(got) == len(want["scores"]) > 0
    order = torch.argsort(want["scores"], descending=True)
    for inst, k in zip(got, order):
        assert inst.score == pytest.approx(float(want["scores"][k]), abs=1e-5)
        np.testing.assert_allclose(inst.box, want["boxes"][k].numpy(), atol=1e-2)
        ref_mask = want["masks"][k].numpy().astype(bool)
        iou = (inst.mask & ref_mask).sum() / max((inst.mask | ref_mask).sum(), 1)
        assert iou > 0.995, iou


def test_resize_bilinear_equals_torch():
    x = np.random.default_rng(0).standard_normal((3, 29, 37)).astype(np.float32)
    for size in [(64, 80), (300, 451), (13, 17)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=size, mode="bilinear",
                                               align_corners=False)[0].numpy()
        np.testing.assert_allclose(resize_bilinear(x, *size), want, atol=5e-5)


def test_write_image_predictions(bundle_and_reference, tmp_path):
    import json

    from litetext.predict_many import write_image_predictions

    predictor, _, _ = bundle_and_reference
    image = builtin_asset("rocket.jpg")
    rgb = load_rgb(image)
    found = predictor.predict_prompts(rgb, ["rocket"], threshold=0.0)
    write_image_predictions(found, image, rgb, tmp_path, "RANDOM weights", 0.0)
    record = json.loads((tmp_path / "instances.json").read_text())
    assert len(record["prompts"]["rocket"]) == len(found["rocket"]) == 12  # every query passes threshold 0
    assert record["image_size"] == [640, 427] and record["weights"] == "RANDOM weights"
    assert (tmp_path / "overlay.png").is_file() and (tmp_path / record["prompts"]["rocket"][0]["mask"]).is_file()


def test_predict_needs_all_graphs(tmp_path, tiny_s0):
    export_bundle(tiny_s0, tmp_path / "text", graphs=["text_encoder"])
    with pytest.raises(LitetextError, match="lacks graphs"):
        Predictor(tmp_path / "text")
