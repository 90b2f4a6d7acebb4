"""Distillation on tiny configs: it learns the teacher (held-out cosine), stops and resumes to the same weights,
caches teacher targets by content, trains what it exports, and writes a model `litetext export` takes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TINY_HEADS, tiny_model
from litetext.distill import DistillSettings, distill, read_log
from litetext.distill.cli import distill as distill_command
from litetext.distill.data import BatchOrder, shuffle_words, tokenize
from litetext.distill.losses import masked_cosine_loss, masked_mse, token_cosine, word_order_loss
from litetext.distill.student import StudentText
from litetext.distill.targets import cache_key, load_or_compute
from litetext.errors import LitetextError
from litetext.models.graphs import build_graph, get_padding
from litetext.models.loading import load_model

# A tiny student, wider than the tiny test configs so that it can follow the tiny teacher within seconds.
STUDENT_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                    use_repmixer_blocks=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny matrices on a shared 2-core machine: threads cost more in synchronisation than they give.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(shared):
    from litetext.calibration.data import read_prompts

    calib = shared / "prompts" / "calib"
    train = read_prompts([calib / "lvis_v1_synonyms.txt", calib / "a2d_sentences_queries.txt"])
    rng = np.random.default_rng(0)
    train = [train[i] for i in sorted(rng.choice(len(train), 3000, replace=False))]
    held_out = read_prompts([shared / "prompts" / "eval"])  # measured only
    return train, held_out


def settings(**kw) -> DistillSettings:
    base = dict(steps=30, batch=16, lr=3e-3, save_every=10, eval_every=10, log_every=1, eval_count=64)
    return DistillSettings(**{**base, **kw})


def run(teacher, out, data, st, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return distill(teacher, out, data[0], data[1], "litetext-s0", st, student_text_overrides=STUDENT_TEXT, **kw)


@pytest.fixture(scope="module")
def transformers_teacher():
    """The tiny teacher with transformers' initialisation, for the figures measured on it: under stress weights
    the same 150 steps reach a held-out cosine of 0.846 (a harder teacher to follow), and two torchrun
    processes end 1.3e-3 apart from one process after 6 steps (against < 1e-5 here)."""
    return tiny_model("sam3", init="transformers")


def test_distillation_learns_the_teacher_and_exports(transformers_teacher, data, tmp_path):
    tiny_teacher = transformers_teacher  # 0.944 after 150 steps was measured on it
    from litetext.export import export_bundle

    out = tmp_path / "run"
    summary = run(tiny_teacher, out, data, settings(steps=150, batch=32, eval_every=50, save_every=50,
                                                    log_every=10, eval_count=128))
    first, final = summary["eval_first"]["cosine_mean"], summary["eval_final"]["cosine_mean"]
    assert abs(first) < 0.2, first  # 0.145: a random student points nowhere near the teacher
    assert final > 0.9, final  # 0.944 after 150 steps (benchmarks/distill_tiny.py: 0.966 after 400)
    evals = [r["eval"]["cosine_mean"] for r in read_log(out) if "eval" in r]
    assert [r["step"] for r in read_log(out) if "eval" in r] == [0, 50, 100, 150]
    assert evals == sorted(evals)  # held-out agreement rises at every evaluation

    # OUT is a transformers SAM3-LiteText checkpoint: student text, the teacher's vision encoder and heads
    loaded = load_model(checkpoint=out)
    assert loaded.family == "litetext" and loaded.model.config.text_config.hidden_size == 64
    teacher_state = tiny_teacher.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        if key.startswith(("vision_encoder.", "detr_decoder.", "mask_decoder.")):
            assert torch.equal(value, teacher_state[key]), key

    # what was trained is what exports: the export graph (position table baked) gives the training features
    student = StudentText(loaded.model.text_encoder, loaded.model.text_projection)
    state = torch.load(out / "train" / "checkpoint.pt", weights_only=True)
    student.load_state_dict(state["model"])
    ids = torch.from_numpy(tokenize(data[1][:40], 16).input_ids)
    graph = build_graph("text_encoder", loaded, 16, get_padding("upstream"))
    with torch.no_grad():
        assert torch.equal(graph(ids), student(ids))
    # ... and the exported graph scores the logged held-out cosine on the cached held-out targets
    entry = next(p for p in (out / "train" / "cache").iterdir()
                 if json.loads((p / "meta.json").read_text())["prompts"] == 128)
    ids, lengths = np.load(entry / "input_ids.npy"), np.load(entry / "lengths.npy")
    target = torch.from_numpy(np.load(entry / "targets.npy").astype(np.float32))
    valid = torch.arange(16)[None, :] < torch.from_numpy(lengths)[:, None]
    with torch.no_grad():
        cosine = token_cosine(graph(torch.from_numpy(ids)), target, valid).mean().item()
    assert cosine == pytest.approx(final, abs=1e-6)

    manifest = export_bundle(loaded, tmp_path / "bundle", graphs=["text_encoder"])
    assert list(manifest["graphs"]) == ["text_encoder"]  # export checks parity itself and fails below it
    assert (tmp_path / "bundle" / "text_encoder.onnx").is_file()


def test_interrupted_run_resumes_to_the_same_weights(tiny_teacher, data, tmp_path):
    from safetensors.torch import load_file

    st = settings()
    run(tiny_teacher, tmp_path / "straight", data, st)

    def interrupt(step, record):
        if step == 17:  # past the checkpoint at step 10: steps 11-17 are logged, then lost, then redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tiny_teacher, tmp_path / "resumed", data, st, on_step=interrupt)
    assert read_log(tmp_path / "resumed")[-1]["step"] == 17
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    with pytest.raises(LitetextError, match="pass --resume"):
        run(tiny_teacher, tmp_path / "resumed", data, st)
    summary = run(tiny_teacher, tmp_path / "resumed", data, st, resume=True)
    assert summary["status"] == "completed"

    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda log: [(r["step"], r.get("loss"), r.get("eval")) for r in log]  # noqa: E731
    assert strip(read_log(tmp_path / "straight")) == strip(read_log(tmp_path / "resumed"))
    assert len(read_log(tmp_path / "resumed")) == 30 + 4  # each step once, evaluations at 0, 10, 20, 30

    with pytest.raises(LitetextError, match="other settings"):
        run(tiny_teacher, tmp_path / "resumed", data, settings(lr=1e-3), resume=True)


@pytest.fixture(scope="module")
def folders(transformers_teacher, tmp_path_factory):
    """The tiny teacher and a tiny student as transformers checkpoint folders, for the command line
    (transformers' initialisation: the torchrun bound of 1e-5 was measured on it, see transformers_teacher)."""
    root = tmp_path_factory.mktemp("checkpoints")
    transformers_teacher.model.save_pretrained(root / "teacher")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init = load_model("litetext-s0", random_init=True, seed=1, init="transformers",
                          config_overrides={**TINY_HEADS, "text_config": STUDENT_TEXT})
    init.model.save_pretrained(root / "student")
    return root / "teacher", root / "student"


def test_cli_stop_and_resume(folders, data, tmp_path, shared):
    teacher_dir, student_dir = folders
    prompts = tmp_path / "train.txt"
    prompts.write_text("\n".join(data[0][:500]) + "\n")
    base = ["--teacher", teacher_dir, "--student", student_dir, "--prompts", prompts, "--eval-prompts",
            shared / "prompts" / "eval" / "refcocos_test_expressions.txt", "--steps", 20, "--batch", 16, "--lr",
            3e-3, "--save-every", 5, "--eval-every", 10, "--eval-count", 32]
    invoke = lambda *args: CliRunner().invoke(distill_command, [str(a) for a in [*base, *args]])  # noqa: E731

    result = invoke("-o", tmp_path / "a", "--stop-after", 12)
    assert result.exit_code == 0, result.output
    assert "stopped at step 12 of 20" in result.output
    result = invoke("-o", tmp_path / "a")
    assert result.exit_code == 2 and "pass --resume" in result.output and result.output.count("\n") == 1
    result = invoke("-o", tmp_path / "a", "--resume")
    assert result.exit_code == 0, result.output
    assert "held-out cosine to the teacher" in result.output
    result = invoke("-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    a = json.loads((tmp_path / "a" / "distill.json").read_text())
    b = json.loads((tmp_path / "b" / "distill.json").read_text())
    assert a["final_loss"] == b["final_loss"] and a["eval_final"] == b["eval_final"]
    assert a["student"]["init"]["kind"] == "checkpoint"

    for args, message in [(["--teacher", "sam3"], "--random-init"), (["--student", "litetext-x"], "--student"),
                          (["--steps", 0], "--steps must be at least 1"), (["--resume"], "nothing to resume")]:
        result = CliRunner().invoke(distill_command, [str(a) for a in [*base, *args, "-o", tmp_path / "c"]])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1, result.output


def test_teacher_targets_are_cached_by_content(tiny_teacher, tmp_path):
    prompts = ["a cat", "the red car on the left", "dog"]
    cpu = torch.device("cpu")
    first = load_or_compute(prompts, tiny_teacher, 16, tmp_path, cpu)
    again = load_or_compute(prompts, tiny_teacher, 16, tmp_path, cpu)
    assert first.computed and not again.computed and first.key == again.key
    assert np.array_equal(first.features, again.features) and first.features.dtype == np.float16
    assert cache_key(prompts[:2], tiny_teacher, 16) != first.key
    assert cache_key(prompts, tiny_teacher, 8) != first.key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from conftest import tiny_model

        other = tiny_model("sam3", seed=1)
    assert cache_key(prompts, other, 16) != first.key
    # the targets are the teacher's features of the student's tokens; for prompts that fit, the causal
    # teacher gives the same valid-token features at context 16 as at context 32
    ids32 = torch.from_numpy(tokenize(prompts, 32).input_ids)
    with torch.no_grad():
        at32 = build_graph("text_encoder", tiny_teacher, 32, get_padding("upstream"))(ids32).numpy()
    for row, n in enumerate(first.tokens.lengths):
        np.testing.assert_allclose(first.features[row, :n], at32[row, :n], atol=2e-3, rtol=2e-3)  # float16


def test_losses_see_valid_tokens_only():
    torch.manual_seed(0)
    s, t = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    valid = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]).bool()
    s2 = s.clone()
    s2[~valid] = 100.0  # pads may hold anything
    assert torch.equal(masked_mse(s, t, valid), masked_mse(s2, t, valid))
    assert torch.equal(masked_cosine_loss(s, t, valid), masked_cosine_loss(s2, t, valid))
    expected = np.mean([((s[0, :3] - t[0, :3]) ** 2).mean().item(), ((s[1, :5] - t[1, :5]) ** 2).mean().item()])
    assert masked_mse(s, t, valid).item() == pytest.approx(expected, rel=1e-6)
    assert masked_cosine_loss(t, t, valid).item() == pytest.approx(0.0, abs=1e-6)
    # word order: a twin with the same valid tokens in another order pools to the same mean
    twin = s[:, [2, 1, 0, 3, 4, 5]]
    twin[1] = s[1, [4, 3, 2, 1, 0, 5]]
    assert word_order_loss(s, valid, twin, valid).item() == pytest.approx(0.0, abs=1e-10)
    assert word_order_loss(s, valid, s + 1.0, valid).item() == pytest.approx(1.0)


def test_batches_and_shuffles_are_functions_of_seed_and_step():
    order = BatchOrder(10, 4, seed=3)
    first_epoch = np.concatenate([order.indices(0), order.indices(1), order.indices(2)[:2]])
    assert sorted(first_epoch) == list(range(10))  # every prompt once per epoch
    assert np.array_equal(BatchOrder(10, 4, seed=3).indices(7), order.indices(7))
    assert not np.array_equal(BatchOrder(10, 4, seed=4).indices(0), order.indices(0))
    assert shuffle_words("cat", 0, 0, 0) is None
    twin = shuffle_words("a red car", 0, 5, 1)
    assert twin != "a red car" and sorted(twin.split()) == ["a", "car", "red"]
    assert twin == shuffle_words("a red car", 0, 5, 1)
    assert shuffle_words("left right", 0, 0, 0) == "right left"  # two words: always swapped


def test_settings_schedule():
    st = DistillSettings(steps=100, lr=1e-3)
    assert st.lr_at(0) == pytest.approx(1e-3 / 5)  # warmup: 5% of steps
    assert st.lr_at(4) == pytest.approx(1e-3)
    assert st.lr_at(99) == pytest.approx(1e-5)
    with pytest.raises(LitetextError, match="context-length"):
        DistillSettings(context_length=12).validate()


def test_torchrun_two_processes_match_one(folders, shared, tmp_path):
    """DistributedDataParallel under torchrun (2 CPU processes, Gloo): each takes half of every global batch
    and the result matches one process on the whole batch, up to float rounding."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    teacher_dir, student_dir = folders
    prompts = tmp_path / "train.txt"  # sentences only: every prompt has a word-shuffled twin
    prompts.write_text("\n".join((shared / "prompts" / "calib" / "a2d_sentences_queries.txt")
                                  .read_text().splitlines()[:300]) + "\n")
    args = ["--teacher", teacher_dir, "--student", student_dir, "--prompts", prompts, "--eval-prompts",
            shared / "prompts" / "eval" / "refcocos_test_expressions.txt", "--steps", 6, "--batch", 8, "--lr", 3e-3,
            "--eval-every", 3, "--eval-count", 16]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "litetext.distill.cli", *map(str, args), "-o", str(tmp_path / "ddp")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = CliRunner().invoke(distill_command, [str(a) for a in [*args, "-o", tmp_path / "one"]])
    assert result.exit_code == 0, result.output
    two, one = read_log(tmp_path / "ddp"), read_log(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(two, one):
        if "eval" in a:
            assert a["eval"]["cosine_mean"] == pytest.approx(b["eval"]["cosine_mean"], abs=1e-5)
        else:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    wa, wb = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
