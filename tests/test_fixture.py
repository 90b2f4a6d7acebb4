"""The fixture's parts: rendered scenes with exact answers, the set loss, and seeded, resumable training."""

import json

import numpy as np
import pytest
import torch

from litetext.errors import LitetextError
from litetext.fixture.losses import Target, generalized_iou, set_loss
from litetext.fixture.scenes import COLORS, SHAPES, parse_prompt, render_scene, vocabulary


def test_scenes_are_seeded_and_exact():
    a, b, c = render_scene(5), render_scene(5), render_scene(6)
    assert np.array_equal(a.image, b.image) and a.prompts == b.prompts
    assert not np.array_equal(a.image, c.image)
    assert 3 <= len(a.shapes) <= 6 and a.image.shape == (168, 168, 3) and a.image.dtype == np.uint8
    cover = np.zeros(a.image.shape[:2], int)
    for shape in a.shapes:
        cover += shape.mask
        ys, xs = np.nonzero(shape.mask)
        assert shape.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        # the visible pixels carry the shape's colour: its dominant channel
        mean = a.image[shape.mask].mean(0)
        want = np.array(COLORS[shape.color], float)
        assert np.abs(mean - want).max() < 60, (shape.color, mean)
    assert cover.max() == 1  # visible masks never overlap


def test_prompts_and_answers():
    scene = render_scene(3)
    absent = [p for p in scene.prompts if not scene.answer(p)]
    present = [p for p in scene.prompts if scene.answer(p)]
    assert len(absent) == 2 and present
    for prompt in present:
        color, kind = parse_prompt(prompt)
        assert all((color in (None, s.color)) and (kind in (None, s.kind)) for s in scene.answer(prompt))
    assert parse_prompt("the green star") == ("green", "star") and parse_prompt("blue shapes") == ("blue", None)
    assert len(vocabulary()) == len(COLORS) * (2 * len(SHAPES) + 1) + len(SHAPES)
    with pytest.raises(ValueError, match="names neither"):
        parse_prompt("a cat")


def test_generalized_iou():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.25, 0.0, 0.75, 0.5]])
    np.testing.assert_allclose(generalized_iou(a, b)[0].numpy(), [1.0, -0.5, 1 / 3], atol=1e-6)


def _outputs_for(targets, queries=5, order=(3, 0)):
    """Outputs that answer `targets` perfectly with the queries in `order` (the others score nothing)."""
    size = targets[0].masks.shape[-1]
    logits = torch.full((len(targets), queries), -12.0)
    boxes = torch.full((len(targets), queries, 4), 0.5)
    boxes[..., 2:] = 0.6
    masks = torch.full((len(targets), queries, size, size), -12.0)
    for i, t in enumerate(targets):
        for q, g in zip(order, range(len(t.boxes))):
            logits[i, q] = 12.0
            boxes[i, q] = t.boxes[g]
            masks[i, q] = t.masks[g] * 24 - 12
    presence = torch.tensor([[12.0 if len(t.boxes) else -12.0] for t in targets])
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks, "presence_logits": presence}


def test_set_loss_matches_queries_to_targets():
    masks = torch.zeros(2, 8, 8)
    masks[0, :4, :4] = 1
    masks[1, 4:, 2:] = 1
    targets = [Target(torch.tensor([[0, 0, 0.5, 0.5], [0.25, 0.5, 1, 1]]), masks), Target(torch.zeros(0, 4), masks[:0])]
    perfect = set_loss(_outputs_for(targets), targets)  # queries 3 and 0 hold the answers: matching finds them
    for term in ("l1", "giou", "score", "presence"):
        assert float(perfect[term]) < 1e-3, term
    assert float(perfect["dice"]) < 0.01
    swapped = _outputs_for(targets)
    swapped["pred_boxes"][0, [3, 0]] = swapped["pred_boxes"][0, [0, 3]]  # boxes no longer match the masks
    assert float(set_loss(swapped, targets)["loss"]) > float(perfect["loss"]) + 1
    silent = _outputs_for(targets)
    silent["presence_logits"][0] = -12.0  # says nothing is there
    assert float(set_loss(silent, targets)["presence"]) > 5


def test_training_is_seeded_and_resumes_exactly(tmp_path):
    from litetext.fixture.train import FixtureSettings, train_fixture
    from litetext.models.loading import load_model

    settings = dict(steps=3, images=2, prompts_per_image=2, image_size=56, eval_scenes=2, save_every=10,
                    eval_every=10, log_every=1, threads=1)
    whole = train_fixture(tmp_path / "whole", FixtureSettings(**settings))
    assert whole["status"] == "completed" and set(whole["held_out"]["meets_targets"]) == {
        "matched_mask_iou_mean", "found_share", "absent_empty_share"}
    stopped = train_fixture(tmp_path / "split", FixtureSettings(**settings), stop_after=1)
    assert stopped["status"] == "stopped"
    with pytest.raises(LitetextError, match="--resume"):
        train_fixture(tmp_path / "split", FixtureSettings(**settings))
    with pytest.raises(LitetextError, match="other settings"):
        train_fixture(tmp_path / "split", FixtureSettings(**{**settings, "lr": 0.5}), resume=True)
    train_fixture(tmp_path / "split", FixtureSettings(**settings), resume=True)
    a = load_model(checkpoint=tmp_path / "whole").model.state_dict()
    b = load_model(checkpoint=tmp_path / "split").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]


def test_auxiliary_outputs_are_the_decoder_layers():
    """The hooks hand over the decoder's earlier layers (scores from the model's own scoring call, whose last
    layer is pred_logits), and the plain net (export's code) has no hooks."""
    from litetext.fixture.model import FixtureNet, scene_batch
    from litetext.fixture.train import FixtureSettings, new_fixture_model, training_scenes

    settings = FixtureSettings(image_size=56, images=1, prompts_per_image=2)
    loaded = new_fixture_model(settings)
    net = FixtureNet(loaded, aux=True)
    pixels, ids, mask, _ = scene_batch(*training_scenes(settings, 0, 0, 1))
    with torch.no_grad():
        out = net(pixels, ids, mask, 2)
        seen = {}
        hook = loaded.model.dot_product_scoring.register_forward_hook(lambda m, i, o: seen.update(logits=o))
        plain = FixtureNet(loaded)(pixels, ids, mask, 2)
        hook.remove()
    layers = loaded.model.config.detr_decoder_config.num_layers
    assert len(out["aux"]) == layers - 1 and "aux" not in plain
    torch.testing.assert_close(seen["logits"][-1, ..., 0], out["pred_logits"])
    for k, layer in enumerate(out["aux"]):
        torch.testing.assert_close(layer["pred_logits"], seen["logits"][k, ..., 0])
        assert layer["pred_boxes"].shape == out["pred_boxes"].shape
