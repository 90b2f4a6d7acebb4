"""Every command's options and paths checked before any model is built or bundle run, all problems reported at
once in one line: names (graphs, precision per target, methods), numbers (context length among the model's, a
threshold in [0, 1], counts above 0), inputs that must exist, and outputs that can be written (a folder that can
be created and written, never a file replaced by a folder)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from litetext.errors import LitetextError


class Problems:
    """Collects what is wrong with a command line; `raise_any` raises them together as one LitetextError."""

    def __init__(self):
        self.found: list[str] = []

    def add(self, message: str | None) -> None:
        if message:
            self.found.append(message)

    def check(self, call, *args, **kwargs):
        """Run a check that raises LitetextError; keep its message instead. Returns its result or None."""
        try:
            return call(*args, **kwargs)
        except LitetextError as e:
            self.add(str(e))
            return None

    def raise_any(self) -> None:
        if len(self.found) == 1:
            raise LitetextError(self.found[0])
        if self.found:
            raise LitetextError(f"{len(self.found)} problems: " + "; ".join(self.found))


def unit_interval(value: float | None, option: str) -> str | None:
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):  # nan fails both
        return f"{option} takes a number from 0 to 1, not {value}"
    return None


def at_least(value: int | float | None, least: int | float, option: str) -> str | None:
    if value is not None and (isinstance(value, float) and math.isnan(value) or value < least):
        return f"{option} must be at least {least}, not {value}"
    return None


def one_of(value: str | None, choices, option: str) -> str | None:
    if value is not None and value not in choices:
        return f"{option} takes {', '.join(map(str, choices))}, not {value!r}"
    return None


def positive_integers(text: str, option: str, example: str = "1,8") -> list[int]:
    """Comma-separated positive integers, or a LitetextError naming the option."""
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values or not all(v.isdigit() and int(v) > 0 for v in values):
        raise LitetextError(f"{option} takes comma-separated positive integers such as {example}, not {text!r}")
    return [int(v) for v in values]


def existing(paths, option: str, kind: str = "file or folder") -> str | None:
    missing = [str(p) for p in paths or () if not Path(p).exists()]
    if missing:
        return f"{option}: {', '.join(missing)} does not exist (give an existing {kind})"
    return None


def context_length(value: int | None, preset: str | None) -> str | None:
    """The context lengths the model takes (every preset's when the checkpoint names the architecture)."""
    from litetext.models.presets import PRESETS

    if value is None:
        return None
    allowed = PRESETS[preset].context_lengths if preset in PRESETS else sorted(
        {n for p in PRESETS.values() for n in p.context_lengths})
    if value not in allowed:
        return f"--context-length takes {' or '.join(map(str, allowed))}, not {value}"
    return None


def graph_names(graphs: list[str], extra: tuple[str, ...] = ()) -> str | None:
    from litetext.models.graphs import GRAPH_NAMES

    known = (*GRAPH_NAMES, *extra)
    unknown = [g for g in graphs if g not in known]
    return f"unknown graphs {unknown}; choose from: {', '.join(known)}" if unknown else None


def _first_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path, what: str) -> str | None:
    """Whether a file can be created in `folder` (tried, then removed: permissions, read-only file systems and
    full disks all show)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".litetext-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        from litetext.cli_helpers import os_error_line

        return f"{what}: cannot write in {folder} ({os_error_line(e).split(': ', 1)[-1]})"
    return None


def output_folder(out: str | Path | None, option: str = "-o") -> str | None:
    """A folder litetext writes (it is built beside its place and renamed there, so its parent is written)."""
    if out is None:
        return None
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        return f"{option} {out} is a file, not a folder; give the path of a folder to write (a new or an old output)"
    return _parent_problem(out, option)


def output_file(path: str | Path | None, option: str) -> str | None:
    """A file litetext writes (through a temporary file beside it)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return f"{option} {path} is a folder; give a file name"
    return _parent_problem(path, option)


def not_being_written(out: str | Path) -> None:
    """Fails (LitetextError) while another litetext process writes `out` (litetext.files.folder_lock)."""
    from litetext.files import folder_lock

    if Path(os.path.abspath(out)).parent.is_dir():
        with folder_lock(out):
            pass


def _parent_problem(path: Path, option: str) -> str | None:
    ancestor = _first_existing(Path(os.path.abspath(path)).parent)
    if not ancestor.is_dir():
        return f"{option} {path}: {ancestor} is a file, so no folder can be made under it"
    return _writable(ancestor, f"{option} {path}")


# One check per command, called first thing: nothing is loaded or run before it passes.

def check_export(preset, checkpoint, target, tensorrt_versions, deployment_target, compute_units, batch_sizes,
                 graphs, context_length_, precision, text_padding, parity_prompts, parity_images, calib_prompts,
                 calib_images, calib_set, calib_method, min_cosine_mean, min_cosine_worst_1pct, vocabulary_files,
                 vocabulary_precision, prune_files, seed, out, force) -> None:
    from litetext.calibration.int8 import METHODS
    from litetext.cli_helpers import split_list
    from litetext.export.targets import target_module
    from litetext.export.writer import BundleWriter
    from litetext.models.graphs import get_padding

    p = Problems()
    module = p.check(target_module, target)
    if module is not None:
        p.add(one_of(precision, module.PRECISIONS, f"--precision for the {target} target"))
    versions = split_list(tensorrt_versions)
    p.add(one_of(next((v for v in versions if v not in ("10", "11")), None), ("10", "11"), "--tensorrt-version"))
    sizes = p.check(positive_integers, batch_sizes, "--batch-sizes", "1,2,4,8")
    if sizes and module is not None and target == "coreml" and precision in module.PRECISIONS:
        p.check(module.check_options, precision, deployment_target=deployment_target, compute_units=compute_units,
                batch_sizes=sizes)
    p.add(graph_names(split_list(graphs)))
    p.add(context_length(context_length_, preset))
    p.check(get_padding, text_padding)
    p.add(one_of(calib_method, METHODS, "--calib-method"))
    p.add(one_of(vocabulary_precision, ("fp16", "int8"), "--vocabulary-precision"))
    p.add(unit_interval(min_cosine_mean, "--min-cosine-mean"))
    p.add(unit_interval(min_cosine_worst_1pct, "--min-cosine-worst-1pct"))
    p.add(at_least(seed, 0, "--seed"))
    for paths, option in ((parity_prompts, "--parity-prompts"), (parity_images, "--parity-images"),
                          (calib_prompts, "--calib-prompts"), (calib_images, "--calib-images"),
                          ([calib_set] if calib_set else (), "--calib-set"), (vocabulary_files, "--vocabulary"),
                          (prune_files, "--prune-vocabulary"), ([checkpoint] if checkpoint else (), "--checkpoint")):
        p.add(existing(paths, option))
    if calib_set and Path(calib_set).exists():
        from litetext.calibration.sets import CalibrationSet

        p.check(CalibrationSet.load, calib_set)  # a damaged set fails now, not after the model is built
    problem = output_folder(out)
    p.add(problem)
    if problem is None:
        p.check(BundleWriter, out, force)  # an existing OUT without --force
        p.check(not_being_written, out)
    p.raise_any()


def check_predict(bundle, images, prompt_files, threshold, out) -> None:
    p = Problems()
    p.add(existing([bundle], "BUNDLE", "bundle folder"))
    p.add(existing(images, "--image", "image file or folder"))
    p.add(existing(prompt_files, "--prompts", "prompt file or folder"))
    p.add(unit_interval(threshold, "--threshold"))
    p.add(output_folder(out))
    p.raise_any()


def check_calibrate(prompts, images, context_length_, text_padding, count, seed, out) -> None:
    from litetext.models.graphs import get_padding

    p = Problems()
    p.add(existing(prompts, "--prompts"))
    p.add(existing(images, "--images"))
    p.add(context_length(context_length_, None))
    p.check(get_padding, text_padding)
    p.add(at_least(count, 1, "--count"))
    p.add(at_least(seed, 0, "--seed"))
    p.add(output_file(out, "-o"))
    p.raise_any()


def check_bench(targets, merge, graphs, prompts, images, batch, threads, threshold, warmup, min_runs, min_seconds,
                max_seconds, context_length_, text_padding, json_path, report_dir, pipeline_prompts="1,8") -> None:
    from litetext.cli_helpers import split_list
    from litetext.models.graphs import get_padding

    p = Problems()
    if not targets:
        p.add("give at least one TARGET (or result files with --merge)")
    if merge:
        p.add(existing(targets, "--merge", "result file"))
    else:
        p.add(existing([t for t in targets if not t.startswith("torch:")], "TARGET", "bundle folder"))
    p.add(graph_names(split_list(graphs), extra=("pipeline",)))  # pipeline: the whole-pipeline rows
    p.add(existing(prompts, "--prompts"))
    p.add(existing(images, "--images"))
    p.check(positive_integers, batch, "--batch")
    p.check(positive_integers, pipeline_prompts, "--pipeline-prompts")
    p.add(at_least(threads, 1, "--threads"))
    p.add(unit_interval(threshold, "--threshold"))
    p.add(at_least(warmup, 0, "--warmup"))
    p.add(at_least(min_runs, 1, "--min-runs"))
    p.add(at_least(min_seconds, 0, "--min-seconds"))
    if max_seconds is not None and not max_seconds > 0:
        p.add(f"--max-seconds must be positive, not {max_seconds}")
    p.add(context_length(context_length_, None))
    p.check(get_padding, text_padding)
    p.add(output_file(json_path, "--json"))
    p.add(output_folder(report_dir, "--report"))
    p.raise_any()
