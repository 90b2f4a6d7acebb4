"""Outputs: predictions replace their folder whole (no stale masks) or leave it as it was; two exports to one OUT
cannot race; SIGTERM cleans up like Ctrl-C; INT8 calibration leaves nothing outside the bundle's partial
folder; full disks and damaged calibration sets are one line. Also the INT8 export of an image graph from a
calibration set that holds images (it crashed before)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, builtin_image, tiny_model
from hostile import one_line_error, run_cli, tiny_bundle
from litetext.errors import LitetextError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def predict(bundle, out, threshold="0"):
    return run_cli("predict", bundle, "--image", builtin_image(), "--prompt", "cat", "--threshold", threshold,
                   "-o", out)


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_new_prediction_leaves_no_stale_masks(bundle, tmp_path):
    out = tmp_path / "pred"
    assert predict(bundle, out).exit_code == 0
    assert len(list(out.glob("*/p00_*.png"))) == 12  # one folder per image, one mask per instance
    result = predict(bundle, out, threshold="1")
    assert result.exit_code == 0, result.output
    written = json.loads(next(out.glob("*/instances.json")).read_text())
    assert list(out.glob("*/p00_*.png")) == [] and written["prompts"]["cat"] == []
    assert hidden_leftovers(tmp_path) == []


def test_a_folder_litetext_did_not_write_is_never_replaced(bundle, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    line = one_line_error(predict(bundle, out))
    assert "holds files litetext did not write" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("failure, code, message", [
    (OSError(errno.ENOSPC, "No space left on device"), 2, "no space left on the device"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_a_failed_prediction_leaves_the_old_one(bundle, tmp_path, monkeypatch, failure, code, message):
    from PIL import Image

    out = tmp_path / "pred"
    assert predict(bundle, out).exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    calls = []

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # some masks already written into the new folder
            raise failure
        return real_save(self, *args, **kwargs)

    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", failing_save)
    line = one_line_error(predict(bundle, out), code=code) if code == 2 else predict(bundle, out).output
    assert message in line
    assert sorted(p.name for p in out.iterdir()) == before
    assert hidden_leftovers(tmp_path) == []


def test_two_exports_to_one_out_cannot_race(tmp_path):
    from litetext.export.writer import BundleWriter
    from litetext.files import folder_lock

    out = tmp_path / "b"
    with folder_lock(out):  # another export holds OUT
        line = one_line_error(run_cli("export", "--model", "litetext-s0", "--random-init", "--graphs",
                                      "text_encoder", "-o", out))
    assert "another litetext process is writing" in line and not out.exists()
    first, second = BundleWriter(out), BundleWriter(out)  # both looked before either wrote
    with first as tmp:
        (tmp / "manifest.json").write_text("{}")
    with pytest.raises(LitetextError, match="already exists; pass --force"):
        with second:
            pass
    assert (out / "manifest.json").read_text() == "{}"
    assert hidden_leftovers(tmp_path) == []


SLOW_EXPORT = textwrap.dedent("""
    import os, time, click
    from litetext.cli_helpers import friendly_errors
    from litetext.export.writer import BundleWriter

    @click.command()
    @friendly_errors
    def slow():
        with BundleWriter(os.environ["LITETEXT_TEST_OUT"]) as tmp:
            (tmp / "half.onnx").write_bytes(b"0" * 1000)
            print("writing", flush=True)
            time.sleep(60)

    slow(args=[])
""")


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    out = tmp_path / "b"
    env = dict(os.environ, PYTHONPATH=str(REPO), LITETEXT_TEST_OUT=str(out))
    process = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "writing"
    assert any(p.name.startswith(".b.partial-") for p in tmp_path.iterdir())
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_figures_and_results_are_written_atomically(tmp_path, monkeypatch):
    """A figure whose drawing fails leaves neither a partial file nor a temporary one."""
    plt = pytest.importorskip("matplotlib.pyplot")
    from litetext.benchmarks import write_results
    from litetext.files import save_figure_atomic

    write_results([{"status": "ok"}], tmp_path / "r.json")
    fig = plt.figure()
    save_figure_atomic(fig, tmp_path / "ok.png")
    monkeypatch.setattr(fig, "savefig", lambda f, **k: (f.write(b"half a png"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        save_figure_atomic(fig, tmp_path / "broken.png")
    plt.close(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png", "r.json"]


@pytest.mark.parametrize("header, message", [
    ([1, 2], "has format 'list'"),
    ({"format": "litetext-calibration-set/1"}, "is damaged"),
    ({"format": "litetext-calibration-set/1", "prompts": ["a"], "context_length": 16, "pad_id": 0, "images": [1],
      "seed": 0, "source_prompts": 1, "content_hash": "x"}, "is damaged"),
])
def test_damaged_calibration_sets_are_one_line(tmp_path, header, message):
    path = tmp_path / "set.npz"
    np.savez(path, input_ids=np.zeros((1, 16), np.int64), attention_mask=np.zeros((1, 16), np.int64),
             header=np.array(json.dumps(header)))
    line = one_line_error(run_cli("export", "--model", "litetext-s0", "--random-init", "--precision", "int8",
                                  "--calib-set", path, "-o", tmp_path / "out"))
    assert message in line
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken zip")
    assert "is not a litetext calibration set" in one_line_error(
        run_cli("export", "--model", "litetext-s0", "--random-init", "--precision", "int8", "--calib-set",
                tmp_path / "bad.npz", "-o", tmp_path / "out"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outputs") / "ckpt"
    tiny_model().model.save_pretrained(folder)
    return folder


def test_int8_vision_encoder_from_a_calibration_set_with_images(checkpoint, tmp_path, monkeypatch):
    """`litetext calibrate --images` then an INT8 vision-encoder export from that set: the set's images are
    used (they crashed the export before), and calibration's temporary files stay inside the bundle's partial
    folder (the system temp folder, redirected to an empty one, stays empty)."""
    import tempfile

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\nred car\ntwo dogs on a sofa\n")
    calib = tmp_path / "calib.npz"
    result = run_cli("calibrate", "--prompts", prompts, "--images", builtin_image(), "-o", calib)
    assert result.exit_code == 0 and "1 images" in result.output, result.output
    scratch = tmp_path / "system-temp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "int8"
    result = run_cli("export", "--checkpoint", checkpoint, "--graphs", "vision_encoder", "--precision", "int8",
                     "--calib-set", calib, "-o", out)
    assert result.exit_code == 0, result.output
    graph = json.loads((out / "manifest.json").read_text())["graphs"]["vision_encoder"]
    assert graph["calibration"]["calibration_images"] == [Path(builtin_image()).name]
    assert graph["calibration"]["calibration_set"]["images"] == [Path(builtin_image()).name]
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "int8", "prompts.txt", "system-temp"]


def test_a_calibration_set_image_changed_since_is_refused(checkpoint, tmp_path):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.open(builtin_image()).save(image)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    assert run_cli("calibrate", "--prompts", prompts, "--images", image, "-o", tmp_path / "c.npz").exit_code == 0
    Image.open(builtin_image()).rotate(90).save(image)
    line = one_line_error(run_cli("export", "--checkpoint", checkpoint, "--graphs", "vision_encoder", "--precision",
                                  "int8", "--calib-set", tmp_path / "c.npz", "-o", tmp_path / "out"))
    assert "changed since the calibration set was made" in line and not (tmp_path / "out").exists()
    assert hidden_leftovers(tmp_path) == []


def test_bench_exits_non_zero_when_a_record_fails(bundle, tmp_path):
    from hostile import copy_bundle

    case = copy_bundle(bundle, tmp_path / "case")
    (case / "text_encoder.onnx").unlink()
    (case / "text_encoder.onnx").write_bytes(b"not an onnx graph")
    result = run_cli("bench", case, "--graphs", "text_encoder", "--batch", "1", "--no-memory", "--min-runs", "1",
                     "--warmup", "0", "--min-seconds", "0", "--reference", case, "--json", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    assert "records failed: " in result.output and "ONNX Runtime cannot open" in result.output
    record = json.loads((tmp_path / "r.json").read_text())["records"][0]
    assert record["status"] == "failed" and "ONNX Runtime cannot open" in record["error"]
    assert "Traceback" not in result.output
