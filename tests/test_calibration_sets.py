"""Calibration sets: chosen once, saved with a content hash, reused by exports; tampering is caught."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from litetext.calibration.data import builtin_calibration_prompts, builtin_images
from litetext.calibration.sets import CalibrationSet, build_calibration_set
from litetext.cli import main
from litetext.errors import LitetextError
from litetext.export import export_bundle


def test_round_trip_and_hash(tmp_path):
    made = build_calibration_set(builtin_calibration_prompts(), 16, 0, builtin_images(), count=64, seed=3)
    path = made.save(tmp_path / "set.npz")
    loaded = CalibrationSet.load(path)
    assert loaded.prompts == made.prompts and len(loaded.prompts) == 64
    assert np.array_equal(loaded.input_ids, made.input_ids) and loaded.content_hash == made.content_hash
    assert [i["sha256"] for i in loaded.images] == [i["sha256"] for i in made.images]
    assert build_calibration_set(builtin_calibration_prompts(), 16, 0, count=64, seed=4).prompts != made.prompts
    assert [len(f["input_ids"]) for f in loaded.text_feeds()] == [16, 16, 16, 16]


def test_tampered_or_foreign_files_fail(tmp_path):
    made = build_calibration_set(["cat", "dog", "a red bus"], 16, 0)
    path = made.save(tmp_path / "set.npz")
    with np.load(path) as data:
        header, ids, mask = str(data["header"]), data["input_ids"].copy(), data["attention_mask"]
    ids[0, 1] += 1
    np.savez(tmp_path / "bad.npz", input_ids=ids, attention_mask=mask, header=np.array(header))
    with pytest.raises(LitetextError, match="content hash"):
        CalibrationSet.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(LitetextError, match="not a litetext calibration set"):
        CalibrationSet.load(tmp_path / "junk.npz")
    with pytest.raises(LitetextError, match="does not exist"):
        CalibrationSet.load(tmp_path / "none.npz")


def test_export_reuses_a_saved_set_and_records_it(tmp_path, tiny_s0):
    result = CliRunner().invoke(main, ["calibrate", "--prompts", str(tmp_path / "p.txt"), "-o", str(tmp_path / "s.npz")])
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "p.txt").write_text("\n".join(builtin_calibration_prompts()[:300]))
    result = CliRunner().invoke(main, ["calibrate", "--prompts", str(tmp_path / "p.txt"), "--count", "48",
                                       "-o", str(tmp_path / "s.npz")])
    assert result.exit_code == 0, result.output
    saved = CalibrationSet.load(tmp_path / "s.npz")
    manifest = export_bundle(tiny_s0, tmp_path / "b", graphs=["text_encoder"], precision="int8", calib_set=saved)
    recorded = manifest["graphs"]["text_encoder"]["calibration"]
    assert recorded["calibration_set"]["content_hash"] == saved.content_hash
    assert recorded["calibration_prompts"] == 48
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["graphs"]["text_encoder"]["calibration"]


def test_a_set_for_another_context_is_refused(tmp_path, tiny_s0):
    other = build_calibration_set(["cat", "dog"], 32, 0)
    with pytest.raises(LitetextError, match="context 32"):
        export_bundle(tiny_s0, tmp_path / "b", graphs=["text_encoder"], precision="int8", calib_set=other)
    assert not (tmp_path / "b").exists()
