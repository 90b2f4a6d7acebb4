"""The README's two set-up commands are exactly what CI runs."""

import re

from conftest import REPO


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd ", "export "))]
    assert ci == first_block


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    """Every Python block of the README runs as written, in a fresh folder with a photo named cat.jpg, on tiny
    configs of the same architectures (load_model gets tiny config_overrides; nothing else changes)."""
    import shutil

    from conftest import builtin_image, tiny_overrides
    from litetext.models import loading

    real = loading.load_model
    monkeypatch.setattr(loading, "load_model",
                        lambda preset=None, *args, **kwargs: real(preset, *args, config_overrides=tiny_overrides(preset),
                                                                  **kwargs))
    monkeypatch.chdir(tmp_path)
    shutil.copy(builtin_image(), tmp_path / "cat.jpg")
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    assert namespace["instances"] is not None and (tmp_path / "out" / "full" / "manifest.json").is_file()


def test_readme_commands_use_options_the_cli_has():
    """Each `litetext COMMAND ...` line of the README names only options that command takes."""
    import shlex

    from litetext.cli import main

    checked = 0
    for block in _blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command.split("#")[0]) if "litetext " in command else []
            while words and words[0] != "litetext":
                words.pop(0)
            if len(words) < 2 or words[1] not in main.commands:
                continue
            known = {o for p in main.commands[words[1]].params for o in p.opts + p.secondary_opts} | {"--help"}
            unknown = [w for w in words if w.startswith("--") and w not in known]
            assert not unknown, f"README: litetext {words[1]} has no {unknown}"
            checked += 1
    assert checked >= 8


def test_readme_bench_example_times_the_text_encoder_only():
    lines = [line for block in _blocks("bash") for line in block.splitlines() if line.startswith("litetext bench out/")]
    assert lines and all("--graphs text_encoder" in line for line in lines)
