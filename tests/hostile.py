"""Helpers for the hardening tests: one tiny exported bundle per test session, copies of it with a changed
manifest, a record of every file a command opens, and running the CLI as a user does."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner

PROMPTS = ["a cat", "two dogs", "red car"]


def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny LiteText-S0 bundle of all three graphs, exported once per session (shared by the test modules)."""
    out = tmp_path_factory.getbasetemp() / "hostile-tiny-bundle"
    if not (out / "manifest.json").is_file():
        from conftest import tiny_model
        from litetext.export import export_bundle

        export_bundle(tiny_model(), out, parity_prompts=PROMPTS, force=True)
    return out


def copy_bundle(src: Path, dst: Path, manifest: dict | str | None = None) -> Path:
    """A copy of `src` at `dst` whose files are hard links (cheap), with `manifest` (a dict or raw text) written
    instead of the original one."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "manifest.json":
            os.link(f, dst / f.name)
    if manifest is None:
        shutil.copyfile(src / "manifest.json", dst / "manifest.json")
    else:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (dst / "manifest.json").write_text(text, encoding="utf-8")
    return dst


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


class OpenRecorder:
    """Records the paths Python's open, os.open, ONNX Runtime sessions and onnx.load are given."""

    def __init__(self, monkeypatch):
        import onnx
        import onnxruntime as ort

        self.paths: list[str] = []
        real_open, real_os_open = builtins.open, os.open
        real_session, real_load = ort.InferenceSession.__init__, onnx.load

        def rec(path):
            if isinstance(path, (str, bytes, os.PathLike)):
                self.paths.append(os.path.realpath(os.fsdecode(path)))

        def open_(file, *a, **k):
            rec(file)
            return real_open(file, *a, **k)

        def os_open(path, *a, **k):
            rec(path)
            return real_os_open(path, *a, **k)

        def session(self_, path, *a, **k):
            rec(path)
            return real_session(self_, path, *a, **k)

        def load(path, *a, **k):
            rec(path)
            return real_load(path, *a, **k)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(ort.InferenceSession, "__init__", session)
        monkeypatch.setattr(onnx, "load", load)

    def under(self, folder: Path) -> list[str]:
        base = os.path.realpath(folder)
        return [p for p in self.paths if os.path.commonpath([p, base]) == base]


def run_cli(*args):
    from litetext.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    """The command failed with `code` and said so in one line, with no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert not (result.exception and not isinstance(result.exception, SystemExit)), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output  # progress lines may come first
    assert "Traceback" not in result.output
    return errors[0]
