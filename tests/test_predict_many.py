"""Many images x many prompts: the vision encoder runs once per image, the text encoder once per prompt, and
the instances equal those of one-prompt runs (on the fixture, at threshold 0: every query an instance); and at
the app's threshold, what predict finds on held-out scenes is what the scenes hold."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from litetext.cli import main
from litetext.export import export_bundle
from litetext.fixture.model import IMAGE_SIZE
from litetext.fixture.scenes import render_scene, save_scene_png
from litetext.errors import LitetextError
from litetext.predict import Predictor


@pytest.fixture(scope="module")
def fixture_bundle(tmp_path_factory, fixture_model):
    folder = tmp_path_factory.mktemp("predict_many")
    scenes = [render_scene(i, IMAGE_SIZE) for i in (20, 21)]
    paths = []
    for scene in scenes:
        paths.append(folder / f"scene_{scene.seed}.png")
        save_scene_png(scene, paths[-1])
    prompts = [p for s in scenes for p in s.prompts][:8]
    export_bundle(fixture_model, folder / "bundle", parity_prompts=prompts, parity_images=paths)
    return folder / "bundle", scenes, paths


class Counting:
    def __init__(self, runner):
        self.runner, self.calls, self.rows = runner, 0, 0

    def infer(self, feed):
        self.calls += 1
        self.rows += len(next(iter(feed.values())))
        return self.runner.infer(feed)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.score == pytest.approx(y.score, abs=1e-5)
        np.testing.assert_allclose(x.box, y.box, atol=1e-3)
        assert (x.mask != y.mask).sum() <= 2  # batch-1 and batch-N ONNX kernels may differ in the last bits


def test_each_image_and_prompt_is_encoded_once(fixture_bundle):
    bundle, scenes, _ = fixture_bundle
    prompts = sorted({p for s in scenes for p in s.prompts})
    predictor = Predictor(bundle, heads_batch=len(prompts))  # all prompts in one heads call
    counters = {g: Counting(r) for g, r in predictor.runners.items()}
    predictor.runners.update(counters)
    # threshold 0: every query is an instance, so the comparison below sees 16 masks per prompt whatever the
    # fixture's scores are
    results = [predictor.predict_prompts(s.image, prompts, threshold=0.0) for s in scenes]
    assert counters["vision_encoder"].calls == len(scenes)
    assert counters["text_encoder"].rows == len(prompts)  # the second image reuses the first's text features
    assert counters["heads"].calls == len(scenes) and counters["heads"].rows == len(scenes) * len(prompts)
    queries = predictor.bundle.manifest["graphs"]["heads"]["outputs"][0]["shape"][1]
    assert all(len(v) == queries for r in results for v in r.values())

    features = predictor.encode_image(scenes[0].image)  # kept for re-prompting: no vision encoder call
    again = predictor.predict_prompts(features, prompts[:3], threshold=0.0)
    assert counters["vision_encoder"].calls == len(scenes) + 1
    for prompt in prompts[:3]:
        _same(again[prompt], results[0][prompt])

    single = Predictor(bundle)
    for scene, found in zip(scenes, results):
        for prompt in prompts:
            _same(found[prompt], single(scene.image, prompt, threshold=0.0))

    # By default the heads take one prompt per call (bounded memory at 1008 px) and find the same instances.
    default = Predictor(bundle)
    counted = default.runners["heads"] = Counting(default.runners["heads"])
    per_prompt = default.predict_prompts(scenes[0].image, prompts, threshold=0.0)
    assert counted.calls == counted.rows == len(prompts)
    for prompt in prompts:
        _same(per_prompt[prompt], results[0][prompt])
    # Three per call: the last call takes what is left.
    three = Predictor(bundle, heads_batch=3)
    counted = three.runners["heads"] = Counting(three.runners["heads"])
    three.predict_prompts(scenes[0].image, prompts, threshold=0.0)
    assert counted.calls == -(-len(prompts) // 3) and counted.rows == len(prompts)
    with pytest.raises(LitetextError, match="positive number of prompts"):
        Predictor(bundle, heads_batch=0)


def test_predict_command_many_images_and_prompts(fixture_bundle, tmp_path):
    bundle, scenes, paths = fixture_bundle
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("triangle\nblue shapes\n")
    result = CliRunner().invoke(main, ["predict", str(bundle), "--image", str(paths[0]), "--image", str(paths[1]),
                                       "--prompt", "red circle", "--prompts", str(prompt_file), "--threshold",
                                       "0", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    predictor = Predictor(bundle)
    for scene, path in zip(scenes, paths):
        record = json.loads((tmp_path / "out" / path.stem / "instances.json").read_text())
        assert list(record["prompts"]) == ["red circle", "triangle", "blue shapes"]
        for prompt, rows in record["prompts"].items():
            want = predictor(scene.image, prompt, threshold=0.0)
            assert len(rows) == len(want) > 0
            assert [r["score"] for r in rows] == pytest.approx([w.score for w in want], abs=1e-5)
            for r in rows:
                assert (tmp_path / "out" / path.stem / r["mask"]).is_file()
        assert (tmp_path / "out" / path.stem / "overlay.png").is_file()
    folder = tmp_path / "folder"
    folder.mkdir()
    for p in paths:
        (folder / p.name).write_bytes(p.read_bytes())
    result = CliRunner().invoke(main, ["predict", str(bundle), "--image", str(folder), "--prompt", "star",
                                       "-o", str(tmp_path / "out2")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == sorted(p.stem for p in paths)
    result = CliRunner().invoke(main, ["predict", str(bundle), "--image", str(paths[0]), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--prompt" in result.output


def test_predict_finds_what_the_scenes_hold(fixture_bundle):
    """The exported fixture, at score 0.5, through Predictor: the true instances of held-out scenes are found with
    their masks, and prompts naming nothing present give (almost) nothing."""
    from litetext.fixture.evaluate import scene_records, summarize

    bundle, _, _ = fixture_bundle
    predictor = Predictor(bundle)
    records = []
    for scene in [render_scene(i, IMAGE_SIZE) for i in range(30, 40)]:
        records += scene_records(scene, predictor.predict_prompts(scene.image, scene.prompts, threshold=0.5))
    figures = summarize(records)
    assert figures["true_instances"] > 100 and figures["absent_prompts"] == 20
    assert figures["found_share"] >= 0.7, figures
    assert figures["matched_mask_iou_mean"] >= 0.75, figures
    assert figures["absent_empty_share"] >= 0.6, figures
