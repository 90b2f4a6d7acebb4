"""Options and paths are checked before any model is built or bundle run, and every problem is reported at once
in one line with exit status 2; nothing is written anywhere when they fail."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest

from conftest import builtin_image
from hostile import one_line_error, run_cli


@pytest.fixture()
def no_work(monkeypatch):
    """Fails the test if a model is loaded, a bundle opened or a benchmark run."""
    import litetext.benchmarks.run
    import litetext.bundle
    import litetext.models.loading

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(litetext.models.loading, "load_model", forbidden)
    monkeypatch.setattr(litetext.bundle.Bundle, "open", forbidden)
    monkeypatch.setattr(litetext.benchmarks.run, "run_bench", forbidden)


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture()
def sandbox(tmp_path):
    """A folder with a file, an empty bundle-like folder and an image; the test checks nothing else appears."""
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")
    before = listing(tmp_path)
    yield tmp_path
    assert listing(tmp_path) == before


EXPORT = ["export", "--model", "litetext-s0", "--random-init"]


@pytest.mark.parametrize("args, message", [
    (["--context-length", "0"], "--context-length takes 16 or 32, not 0"),
    (["--context-length", "77"], "--context-length takes 16 or 32, not 77"),
    (["--graphs", "text_encoder,decoder"], "unknown graphs ['decoder']"),
    (["--precision", "int4"], "--precision for the onnx target takes fp32, fp16, int8, not 'int4'"),
    (["--target", "tensorrt", "--precision", "fp32"], "--precision for the tensorrt target takes fp16, int8"),
    (["--target", "coreml", "--precision", "w4"], "iOS18"),
    (["--min-cosine-mean", "nan"], "--min-cosine-mean takes a number from 0 to 1, not nan"),
    (["--min-cosine-worst-1pct", "1.5"], "--min-cosine-worst-1pct takes a number from 0 to 1"),
    (["--calib-method", "magic"], "--calib-method takes minmax, entropy, percentile"),
    (["--text-padding", "left"], "left"),
    (["--batch-sizes", "1,0"], "--batch-sizes takes comma-separated positive integers"),
    (["--tensorrt-version", "9"], "--tensorrt-version takes 10, 11, not '9'"),
    (["--parity-images", "MISSING"], "--parity-images: "),
    (["--calib-set", "MISSING"], "--calib-set: "),
    (["--seed", "-1"], "--seed must be at least 0"),
])
def test_export_options_fail_before_the_model_is_built(sandbox, no_work, args, message):
    args = [str(sandbox / "missing.png") if a == "MISSING" else a for a in args]
    line = one_line_error(run_cli(*EXPORT, *args, "-o", sandbox / "out"))
    assert message in line, line


def test_every_export_problem_is_reported_at_once(sandbox, no_work):
    line = one_line_error(run_cli(*EXPORT, "--graphs", "decoder", "--precision", "int9", "--context-length", "7",
                                  "--calib-method", "x", "-o", sandbox / "a_file"))
    assert line.startswith("error: 5 problems: ")
    for part in ("decoder", "int9", "not 7", "--calib-method", "is a file, not a folder"):
        assert part in line, (part, line)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_file_as_out_is_refused_without_suggesting_force(sandbox, no_work, force):
    line = one_line_error(run_cli(*EXPORT, *force, "-o", sandbox / "a_file"))
    assert "is a file, not a folder" in line and "--force" not in line
    assert (sandbox / "a_file").read_text() == "keep me"


def test_a_parent_that_is_a_file_is_refused(sandbox, no_work):
    for args in (EXPORT + ["-o", sandbox / "a_file" / "out"],
                 ["predict", sandbox / "bundle", "--image", builtin_image(), "--prompt", "cat", "-o",
                  sandbox / "a_file" / "x" / "out"],
                 ["calibrate", "--prompts", builtin_image(), "-o", sandbox / "a_file" / "calib.npz"]):
        line = one_line_error(run_cli(*args))
        assert "a_file is a file, so no folder can be made under it" in line, line


def test_an_existing_bundle_still_needs_force(sandbox, no_work):
    line = one_line_error(run_cli(*EXPORT, "-o", sandbox / "bundle"))
    assert "already exists; pass --force" in line


def _unwritable(monkeypatch, folder, code):
    """mkstemp in `folder` fails as a read-only or forbidden folder makes it fail (the tests run as root, for
    whom permission bits do not apply)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.realpath(dir) == os.path.realpath(folder):
            raise OSError(code, os.strerror(code), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code, message", [(errno.EROFS, "read-only file system"),
                                           (errno.EACCES, "permission denied"),
                                           (errno.ENOSPC, "no space left")])
def test_an_unwritable_parent_is_refused(sandbox, no_work, monkeypatch, code, message):
    _unwritable(monkeypatch, sandbox, code)
    for args in (EXPORT + ["-o", sandbox / "new" / "out"],
                 ["predict", sandbox / "bundle", "--image", builtin_image(), "--prompt", "cat", "-o", sandbox / "p"],
                 ["bench", "torch:litetext-s0", "--json", sandbox / "r.json"],
                 ["bench", "torch:litetext-s0", "--report", sandbox / "report"]):
        line = one_line_error(run_cli(*args))
        assert f"cannot write in {sandbox}" in line and message in line, line


@pytest.mark.parametrize("threshold", ["nan", "1.5", "-0.1", "inf"])
def test_predict_threshold_must_be_in_the_unit_interval(sandbox, no_work, threshold):
    line = one_line_error(run_cli("predict", sandbox / "bundle", "--image", builtin_image(), "--prompt", "cat",
                                  "--threshold", threshold, "-o", sandbox / "p"))
    assert "--threshold takes a number from 0 to 1" in line


def test_predict_paths_are_checked_together(sandbox, no_work):
    line = one_line_error(run_cli("predict", sandbox / "nowhere", "--image", sandbox / "missing.png", "--prompt",
                                  "cat", "-o", sandbox / "a_file"))
    assert line.startswith("error: 3 problems:")
    assert "nowhere does not exist" in line and "missing.png does not exist" in line and "is a file" in line


@pytest.mark.parametrize("args, message", [
    (["--count", "0"], "--count must be at least 1, not 0"),
    (["--context-length", "0"], "--context-length takes 16 or 32, not 0"),
    (["--images", "MISSING"], "--images: "),
    (["-o", "FOLDER"], "is a folder; give a file name"),
])
def test_calibrate_options(sandbox, args, message):
    args = [str(sandbox / "missing.png") if a == "MISSING" else str(sandbox) if a == "FOLDER" else a for a in args]
    out = [] if "-o" in args else ["-o", sandbox / "calib.npz"]
    line = one_line_error(run_cli("calibrate", "--prompts", builtin_image(), *args, *out))
    assert message in line, line


@pytest.mark.parametrize("args, message", [
    (["--threshold", "nan"], "--threshold takes a number from 0 to 1"),
    (["--batch", "1,0"], "--batch takes comma-separated positive integers"),
    (["--min-runs", "0"], "--min-runs must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--max-seconds", "0"], "--max-seconds must be positive"),
    (["--json", "FOLDER"], "is a folder; give a file name"),
    (["--graphs", "decoder"], "unknown graphs"),
])
def test_bench_options_fail_before_the_run(sandbox, no_work, args, message):
    args = [str(sandbox) if a == "FOLDER" else a for a in args]
    line = one_line_error(run_cli("bench", "torch:litetext-s0", *args))
    assert message in line, line


def test_bench_json_into_a_file_parent_fails_before_the_run(sandbox, no_work):
    line = one_line_error(run_cli("bench", "torch:litetext-s0", "--json", sandbox / "a_file" / "r.json"))
    assert "a_file is a file" in line


def test_the_python_api_refuses_context_length_zero(tiny_s0, tmp_path):
    from litetext.errors import LitetextError
    from litetext.export import export_bundle
    from litetext.models.loading import load_model

    with pytest.raises(LitetextError, match="context_length takes 16 or 32, not 0"):
        export_bundle(tiny_s0, tmp_path / "out", context_length=0)
    with pytest.raises(LitetextError, match="not 0"):
        load_model("litetext-s0", random_init=True, context_length=0)
    assert not (tmp_path / "out").exists()


def test_analyze_outputs_are_checked_before_the_analysis(sandbox, monkeypatch):
    import litetext.analysis.core

    monkeypatch.setattr(litetext.analysis.core, "analyze", lambda *a, **k: pytest.fail("analysis ran"))
    prompts = sandbox / "a_file"
    line = one_line_error(run_cli("analyze", prompts, "--json", sandbox / "a_file" / "x.json", "--report",
                                  sandbox / "a_file"))
    assert line.startswith("error: 2 problems:") and "a_file is a file, so no folder" in line
    assert "--report " in line and "is a file, not a folder" in line
