"""Core ML target: packages checked on Linux by their saved description (names, types, shapes, operations,
metadata, sizes) and by the same compression simulated in PyTorch; predictions where Core ML runs (macOS)."""

from __future__ import annotations

import builtins
import json
import sys

import numpy as np
import pytest
import torch

from conftest import TINY_HEADS, builtin_image

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'litetext[coreml]')")

from litetext.calibration.data import builtin_calibration_prompts, builtin_prompts, read_prompts  # noqa: E402
from litetext.calibration.int8 import Int8Calibration  # noqa: E402
from litetext.errors import LitetextError  # noqa: E402
from litetext.export import coreml  # noqa: E402
from litetext.export.coreml import compress as coreml_compress  # noqa: E402
from litetext.export.coreml import convert as coreml_convert  # noqa: E402
from litetext.export.coreml import describe as coreml_describe  # noqa: E402
from litetext.export.coreml import options as coreml_options  # noqa: E402
from litetext.export.coreml import simulate as coreml_simulate  # noqa: E402
from litetext.runtimes import coreml_runner  # noqa: E402
from litetext.runtimes.coreml_runner import CoreMLRunner  # noqa: E402
from litetext.models.graphs import build_graph, describe_graphs, get_padding  # noqa: E402
from litetext.runtimes.torch_runner import TorchRunner  # noqa: E402
from litetext.tokenizer import ClipTokenizer  # noqa: E402

CTX = 16
# Big enough that every Linear / 1x1 conv has more than 2,048 weights (coremltools' compression threshold),
# small enough to convert in seconds: 64 wide, RepMixer / transformer / RepMixer like S0.
SMALL_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2, projection_dim=64)


@pytest.fixture(scope="module")
def small_s0():
    from litetext.models.loading import load_model

    return load_model("litetext-s0", random_init=True, seed=0,
                      config_overrides={**TINY_HEADS, "text_config": dict(SMALL_TEXT)})


def text_batches(prompts, padding, size=8):
    return ClipTokenizer()(prompts, context_length=CTX, pad_id=padding.pad_id).feeds(size)


def feed_for(spec, batch):
    return {k: v for k, v in batch.items() if k in spec.input_names}


@pytest.fixture(scope="module")
def text_packages(tmp_path_factory, small_s0):
    """The small S0 text encoder (transformers padding: two inputs and the additive mask) at every precision."""
    out = tmp_path_factory.mktemp("coreml")
    padding = get_padding("transformers")
    spec = describe_graphs(small_s0, CTX, padding)["text_encoder"]
    graph = build_graph("text_encoder", small_s0, CTX, padding)
    example = {k: v[:2] for k, v in text_batches(builtin_prompts()[:2], padding)[0].items()}
    calibration = Int8Calibration(text_batches(builtin_calibration_prompts()[:128], padding, 16), "minmax",
                                  prompts=128)
    packages = {}
    for precision, target in [("fp16", "iOS17"), ("w8", "iOS17"), ("w4", "iOS18"), ("w8a8", "iOS18")]:
        path = out / f"text_encoder-{precision}.mlpackage"
        coreml.export_graph(graph, spec, example, path, precision,
                            calibration if precision == "w8a8" else None, deployment_target=target,
                            metadata={"weights": "RANDOM weights (seed 0)", "license": "none: random weights"})
        packages[precision] = path
    return {"paths": packages, "spec": spec, "graph": graph, "padding": padding, "calibration": calibration}


def test_missing_coremltools_is_one_line_error(monkeypatch):
    real_import = builtins.__import__

    def no_coremltools(name, *args, **kwargs):
        if name == "coremltools" or name.startswith("coremltools."):
            raise ImportError("No module named 'coremltools'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_coremltools)
    with pytest.raises(LitetextError) as info:
        coreml_runner.require_coremltools()
    assert str(info.value) == "coremltools is not installed; install it with: pip install 'litetext[coreml]'"
    with pytest.raises(LitetextError, match=r"^coremltools is not installed"):
        coreml.export_graph(torch.nn.Identity(), None, {}, "x.mlpackage", "fp16")


def test_target_module_shape():
    assert coreml.FILE_SUFFIX == ".mlpackage"
    assert coreml.PRECISIONS == ("fp32", "fp16", "w8", "w4", "w8a8")
    for name in ("export_graph", "files_of", "simulated_runner", "can_predict"):
        assert callable(getattr(coreml, name))


@pytest.mark.parametrize("options, message", [
    (dict(precision="w4", deployment_target="iOS17"), "w4 .* iOS18 or macOS15"),
    (dict(precision="int8"), "exports fp32, fp16, w8, w4, w8a8"),
    (dict(deployment_target="iOS16"), "choose one of: iOS17, iOS18, macOS14, macOS15"),
    (dict(compute_units="NE"), "choose one of: ALL, CPU_AND_NE"),
    (dict(batch_sizes=[0, 2]), "positive"),
])
def test_bad_options_fail_before_any_work(options, message):
    args = dict(precision="fp16", deployment_target="iOS17", compute_units="ALL", batch_sizes=(1, 2))
    with pytest.raises(LitetextError, match=message):
        coreml.check_options(**{**args, **options})


def test_packages_declare_inputs_outputs_and_metadata(text_packages):
    for precision, path in text_packages["paths"].items():
        info = coreml_describe.inspect_package(path)
        assert [i["name"] for i in info["inputs"]] == ["input_ids", "attention_mask"]
        assert all(i["dtype"] == "INT32" and i["shape"] == [1, CTX] for i in info["inputs"])
        assert [(o["name"], o["dtype"]) for o in info["outputs"]] == [("text_features", "FLOAT32")]
        assert all(t["description"] for t in info["inputs"] + info["outputs"])
        if precision in ("fp16", "w8"):  # iOS17 enumerates one input only: a bounded batch range instead
            assert all(i["range"] == [[1, 8], [CTX, CTX]] for i in info["inputs"])
            assert info["specification_version"] == 8
        else:  # iOS18 enumerates every input
            assert all(i["enumerated"] == [[b, CTX] for b in (1, 2, 4, 8)] for i in info["inputs"])
            assert info["specification_version"] == 9
        assert info["author"] == "litetext" and info["license"] == "none: random weights"
        assert info["version"] and "RANDOM" in info["short_description"]
        meta = info["metadata"]
        assert meta["com.litetext.precision"] == precision and meta["com.litetext.context_length"] == str(CTX)
        assert meta["com.litetext.graph"] == "text_encoder" and meta["com.litetext.compute_units"] == "ALL"
        assert json.loads(meta["com.litetext.batch_sizes"]) == [1, 2, 4, 8]


def test_compression_operations_and_sizes(text_packages):
    infos = {p: coreml_describe.inspect_package(path) for p, path in text_packages["paths"].items()}
    ops = {p: info["ops"] for p, info in infos.items()}
    assert not any(k.startswith("constexpr") or k in ("quantize", "dequantize") for k in ops["fp16"])
    assert ops["w8"]["constexpr_affine_dequantize"] == 11  # iOS17: every weight of the graph
    assert "constexpr_blockwise_shift_scale" not in ops["w8"]
    assert ops["w4"]["constexpr_blockwise_shift_scale"] == 11  # iOS18's per-block op
    assert ops["w8a8"]["constexpr_blockwise_shift_scale"] == 11
    # 13 Linear / Conv inputs quantized (q, k and v share one input, so one quantize feeds three layers)
    assert ops["w8a8"]["quantize"] == ops["w8a8"]["dequantize"] >= 11
    assert json.loads(infos["w8a8"]["metadata"]["com.litetext.activation_scales"]) == 15
    size = {p: info["bytes"] for p, info in infos.items()}
    assert size["w8"] <= 0.6 * size["fp16"]
    assert size["w4"] <= 0.35 * size["fp16"]
    assert size["w8a8"] <= 0.6 * size["fp16"]
    assert size["fp16"] == sum(f.stat().st_size for f in coreml.files_of(text_packages["paths"]["fp16"]))


def test_fp16_guard_replaces_the_float32_mask_sentinel(text_packages):
    """The text encoder's additive mask multiplies by float32's minimum: in fp16 that is -inf and the valid
    tokens get 0 * -inf = NaN. The guard replaced it, and no constant of the fp16 program is infinite."""
    assert np.isinf(np.float16(torch.finfo(torch.float32).min))
    for path in text_packages["paths"].values():
        guard = json.loads(coreml_describe.inspect_package(path)["metadata"]["com.litetext.fp16_guard"])
        assert len(guard) == 1 and guard[0]["sentinels"] == 1 and guard[0]["consumers"] == ["mul"]
    program = _program(text_packages["paths"]["fp16"])
    values = [np.asarray(op.outputs[0].val, dtype=np.float32) for op in program.functions["main"].operations
              if op.op_type == "const" and op.outputs[0].val is not None
              and np.issubdtype(np.asarray(op.outputs[0].val).dtype, np.floating)]
    assert values and all(np.isfinite(v).all() for v in values)
    assert any(np.any(v == -coreml_options.MASK_MAGNITUDE) for v in values)


def _program(path):
    return coreml_describe.load_program(path)


class _Toy(torch.nn.Module):
    """A conv, a layer scale of 1e-5 (MobileCLIP's initial value) and an additive mask from float32's min."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(64, 64, 1)
        self.scale = torch.nn.Parameter(torch.full((64, 1, 1), 1e-5))

    def forward(self, x, mask):
        return x + self.scale * self.conv(x) + (1.0 - mask) * torch.finfo(torch.float32).min


def test_guards_catch_what_plain_coremltools_would_write(tmp_path, monkeypatch):
    from litetext.models.graphs import GraphSpec, TensorSpec

    spec = GraphSpec("toy", (TensorSpec("x", "float32", ("batch", 64, 1, 4)), TensorSpec("mask", "float32", ("batch", 64, 1, 4))),
                     (TensorSpec("y", "float32", ("batch", 64, 1, 4)),))
    example = {"x": np.ones((2, 64, 1, 4), np.float32), "mask": np.ones((2, 64, 1, 4), np.float32)}
    guarded = coreml_describe.inspect_package(coreml.export_graph(_Toy(), spec, example, tmp_path / "a.mlpackage", "fp16"))
    assert json.loads(guarded["metadata"]["com.litetext.fp16_subnormal_constants"]) == []
    assert "mul" in guarded["ops"]  # the layer scale stays a multiplication
    monkeypatch.setattr(coreml_convert, "UNFUSED_PASSES", ())
    monkeypatch.setattr(coreml_convert, "GUARD_PASS", "common::noop_elimination")  # as coremltools alone converts
    plain_path = coreml.export_graph(_Toy(), spec, example, tmp_path / "b.mlpackage", "fp16")
    folded = json.loads(coreml_describe.inspect_package(plain_path)["metadata"]["com.litetext.fp16_subnormal_constants"])
    assert len(folded) == 1 and folded[0]["subnormal_fraction"] > 0.9  # 1e-5 x weights: below 6.1e-5
    consts = [np.asarray(op.outputs[0].val, np.float32) for op in _program(plain_path).functions["main"].operations
              if op.op_type == "const" and op.outputs[0].val is not None and np.size(op.outputs[0].val) >= 1
              and np.issubdtype(np.asarray(op.outputs[0].val).dtype, np.floating)]
    assert any(np.isinf(v).any() for v in consts)


def test_simulated_weights_are_the_package_weights_bit_for_bit(text_packages):
    for precision in ("w8", "w4", "w8a8"):
        agreement = coreml_simulate.weight_agreement(text_packages["paths"][precision], text_packages["graph"], precision)
        assert agreement["package_compressed"] == 11, agreement
        assert agreement["bit_exact"] == 11 and agreement["bit_exact_elements_fraction"] == 1.0, agreement
        assert agreement["folded"] == [] and agreement["unmatched"] == []
        # the one extra simulated weight is the text model's own projection, which SAM3-LiteText never calls
        assert agreement["simulated_compressed"] == 12


def test_w4_keeps_the_layer_groups_4_bits_harm_most_at_8_bits(tmp_path, small_s0):
    padding = get_padding("upstream")
    spec = describe_graphs(small_s0, CTX, padding)["text_encoder"]
    graph = build_graph("text_encoder", small_s0, CTX, padding)
    feeds = [feed_for(spec, b) | {"attention_mask": b["attention_mask"]}
             for b in text_batches(builtin_calibration_prompts()[:64], padding, 16)]
    # a target all-4-bit misses, so that the search has to keep some groups at 8 bits, and that it meets before
    # keeping them all. Stress weights (per-group loss of cosine at 4 bits on these prompts): layers.1 0.0097,
    # token table 0.0073, layers.2 0.0020, layers.0 0.0013, projection 7e-5; a target of 0.999 keeps four groups
    # (transformers' weights gave 0.99964 all-4-bit, where this target was 0.99995).
    target = 0.99
    calibration = Int8Calibration(feeds, "minmax", target_cosine_mean=target, prompts=64)
    path = coreml.export_graph(graph, spec, feed_for(spec, text_batches(["a", "b"], padding)[0]), tmp_path / "w4.mlpackage",
                               "w4", calibration, deployment_target="iOS18")
    report = calibration.report
    kept = report["layers_kept_8bit"]
    assert 0 < len(kept) < len(report["layer_sensitivity"]) == 5  # embedding, 3 layers, projection
    assert kept[0] == max(report["layer_sensitivity"], key=report["layer_sensitivity"].get)
    assert report["calibration_parity"]["cosine_mean"] >= target
    assert json.loads(coreml_describe.inspect_package(path)["metadata"]["com.litetext.layers_kept_8bit"]) == kept
    eight = [int(np.abs(w["integers"]).max()) > 7 for w in coreml_describe.package_weights(path).values()]
    assert 0 < sum(eight) < len(eight)  # 8-bit per channel next to 4-bit per block
    agreement = coreml_simulate.weight_agreement(path, graph, "w4", kept)
    assert agreement["bit_exact"] == agreement["package_compressed"] == 11, agreement
    assert coreml.simulated_runner(graph, spec, "w4", calibration).keep_8bit == kept


def test_quantize_weight_matches_coremltools_numpy_code():
    from coremltools.optimize import _utils as optimize_utils
    from coremltools.converters.mil.mil import types

    w = torch.randn(96, 64, 3) * torch.logspace(-3, 0, 96)[:, None, None]
    for bits, block in [(8, None), (4, 32)]:
        values, integers = coreml_compress.quantize_weight(w, bits, 0, 1, block)
        blocks = [1, block or 0, 0]
        q, scale, _ = optimize_utils.compute_qparams_by_dtype(w.half().numpy(), types.get_nbits_int_builtin_type(bits, True),
                                                              "LINEAR_SYMMETRIC", blocks)
        assert np.array_equal(integers.numpy(), q.astype(np.int8))
        want = optimize_utils.dequantize_by_scale_and_zp(q, scale, None)
        assert np.array_equal(values.numpy(), want)
    assert coreml_compress.quantize_weight(torch.randn(8, 40), 4, block=32) is None  # 40 input channels: skipped


@pytest.fixture(scope="module")
def held_out_prompts():
    from conftest import shared_data

    path = shared_data() / "prompts" / "eval"
    if path.is_dir():
        prompts = read_prompts([path])
        rng = np.random.default_rng(0)
        return [prompts[i] for i in sorted(rng.choice(len(prompts), 200, replace=False))]
    return builtin_prompts()


def test_simulated_parity_on_held_out_prompts(text_packages, held_out_prompts):
    graph, spec, padding = text_packages["graph"], text_packages["spec"], text_packages["padding"]
    batches = [feed_for(spec, b) for b in text_batches(held_out_prompts, padding, 50)]
    before = {k: v.clone() for k, v in graph.state_dict().items()}
    reference = TorchRunner(graph, spec)
    figures = {}
    # w4 with the layer groups its search keeps at 8 bits on the calibration prompts, as export_bundle has it
    w4 = Int8Calibration(text_packages["calibration"].feeds, "minmax", prompts=128)
    w4.report = coreml_simulate.search_w4(graph, spec, w4)
    for precision in ("fp32", "fp16", "w8", "w4", "w8a8"):
        calibration = w4 if precision == "w4" else text_packages["calibration"]
        runner = coreml.simulated_runner(graph, spec, precision, calibration)
        figures[precision] = coreml_simulate.measure_parity(reference, runner, batches)["text_features"]
    assert figures["fp32"]["max_abs_error"] == 0.0
    # fp16 rounds relative to the values: the error bound scales with the features' magnitude (stress weights
    # give features up to ~15; transformers' stayed near 1, where this is the old 5e-3)
    fp16 = figures["fp16"]
    # (measured: worst token's cosine 0.9999895 under stress weights drawn per part)
    assert fp16["cosine_min"] > 0.99998 and fp16["max_abs_error"] < 5e-3 * max(1.0, fp16["max_abs_reference"])
    # Stress weights (held-out prompts): w8 cosine mean 0.99992, min 0.99919; w8a8 mean 0.99879; all-4-bit w4
    # mean 0.9795, under its gate (0.99) until the search keeps groups at 8 bits. The tighter bounds of
    # transformers' weights are kept in test_simulated_parity_on_transformers_weights.
    assert 0.995 < figures["w4"]["cosine_mean"] < figures["w8"]["cosine_mean"]
    assert w4.report["layers_kept_8bit"]
    assert figures["w8a8"]["cosine_mean"] < figures["w8"]["cosine_mean"]
    assert figures["fp16"]["count"] >= 3 * len(held_out_prompts)  # valid tokens: start, the prompt's, end
    from litetext.calibration.parity import passes

    for precision in ("w8", "w4"):  # gates the export applies
        assert passes(figures[precision], coreml.TOLERANCES["text_encoder"][precision]), (precision, figures[precision])
    # w8a8 (per-tensor activation scales calibrated on 128 prompts, no layer kept in float) misses its gate on
    # these held-out prompts under stress weights: measured cosine mean 0.99839, worst 1% 0.97439 against 0.98.
    # The export refuses such a package; w8a8 has no mixed-precision search yet.
    w8a8 = figures["w8a8"]
    assert w8a8["cosine_mean"] > 0.995 and not passes(w8a8, coreml.TOLERANCES["text_encoder"]["w8a8"]), w8a8
    # the simulation never touched the module the reference runs
    assert all(torch.equal(v, before[k]) for k, v in graph.state_dict().items())


def test_simulated_parity_on_transformers_weights(tmp_path, held_out_prompts):
    """Pinned to transformers' initialisation: near-identity blocks make 8-bit weights and activations almost
    lossless there (the figures test_simulated_parity_on_held_out_prompts asserted before the stress init)."""
    from litetext.models.loading import load_model

    model = load_model("litetext-s0", random_init=True, seed=0, init="transformers",
                       config_overrides={**TINY_HEADS, "text_config": dict(SMALL_TEXT)})
    padding = get_padding("transformers")
    spec = describe_graphs(model, CTX, padding)["text_encoder"]
    graph = build_graph("text_encoder", model, CTX, padding)
    calibration = Int8Calibration(text_batches(builtin_calibration_prompts()[:128], padding, 16), "minmax",
                                  prompts=128)
    example = {k: v[:2] for k, v in text_batches(builtin_prompts()[:2], padding)[0].items()}
    coreml.export_graph(graph, spec, example, tmp_path / "w8a8.mlpackage", "w8a8", calibration,
                        deployment_target="iOS18")
    batches = [feed_for(spec, b) for b in text_batches(held_out_prompts, padding, 50)]
    reference = TorchRunner(graph, spec)
    figures = {p: coreml_simulate.measure_parity(reference, coreml.simulated_runner(graph, spec, p, calibration),
                                        batches)["text_features"] for p in ("fp16", "w8", "w4", "w8a8")}
    assert figures["fp16"]["cosine_min"] > 0.99999 and figures["fp16"]["max_abs_error"] < 5e-3
    assert figures["w8"]["cosine_min"] > 0.9999 and figures["w8"]["cosine_mean"] > 0.99995
    assert 0.995 < figures["w4"]["cosine_mean"] < figures["w8"]["cosine_mean"]
    assert 0.999 < figures["w8a8"]["cosine_mean"] < figures["w8"]["cosine_mean"]


def test_w8a8_simulation_uses_the_packages_scales(text_packages):
    calibration = text_packages["calibration"]
    scales = calibration.report["activation_scales"]
    assert len(scales) == 15 and all(s > 0 and np.float16(s) == s for s in scales.values())
    assert calibration.report["method"] == "minmax"
    spec = coreml_describe.load_package_spec(text_packages["paths"]["w8a8"])
    program = _program(text_packages["paths"]["w8a8"])
    stored = sorted({float(op.scale.val) for op in program.functions["main"].operations if op.op_type == "quantize"})
    assert stored == sorted(set(scales.values()))
    assert spec.description.metadata.userDefined["com.litetext.activation_scales"] == "15"


def test_write_metadata_adds_parity_in_place(text_packages, tmp_path):
    import shutil

    path = tmp_path / "copy.mlpackage"
    shutil.copytree(text_packages["paths"]["w8"], path)
    weights_before = {f.name: f.read_bytes() for f in coreml.files_of(path) if f.name == "weight.bin"}
    coreml_describe.write_metadata(path, {"parity": {"text_features": {"cosine_mean": 0.9999}}, "parity_kind": "simulated"})
    meta = coreml_describe.inspect_package(path)["metadata"]
    assert json.loads(meta["com.litetext.parity"]) == {"text_features": {"cosine_mean": 0.9999}}
    assert meta["com.litetext.parity_kind"] == "simulated" and meta["com.litetext.precision"] == "w8"
    assert {f.name: f.read_bytes() for f in coreml.files_of(path) if f.name == "weight.bin"} == weights_before


@pytest.fixture(scope="module")
def tiny_vision_heads(tmp_path_factory, tiny_s0):
    from litetext.calibration.data import load_rgb, preprocess_image

    out = tmp_path_factory.mktemp("coreml-vh")
    padding = get_padding("upstream")
    specs = describe_graphs(tiny_s0, CTX, padding)
    pixels = preprocess_image(load_rgb(builtin_image()), 112)
    vision = build_graph("vision_encoder", tiny_s0, CTX, padding)
    text = TorchRunner(build_graph("text_encoder", tiny_s0, CTX, padding), specs["text_encoder"])
    levels = TorchRunner(vision, specs["vision_encoder"]).infer({"pixel_values": pixels})
    batch = text_batches(["cat", "a striped cat on a sofa"], padding)[0]
    heads_feed = {**{k: np.repeat(v, 2, axis=0) for k, v in levels.items()},
                  "text_features": text.infer(feed_for(specs["text_encoder"], batch))["text_features"],
                  "attention_mask": batch["attention_mask"]}
    feeds = {"vision_encoder": {"pixel_values": np.repeat(pixels, 2, axis=0)}, "heads": heads_feed}
    paths = {}
    for name in ("vision_encoder", "heads"):
        graph = build_graph(name, tiny_s0, CTX, padding)
        paths[name] = coreml.export_graph(graph, specs[name], feeds[name], out / f"{name}.mlpackage", "w8",
                                          deployment_target="iOS18")
    return {"paths": paths, "specs": specs, "feeds": feeds, "loaded": tiny_s0, "padding": padding}


def test_vision_encoder_and_heads_convert_in_w8(tiny_vision_heads):
    specs = tiny_vision_heads["specs"]
    for name, path in tiny_vision_heads["paths"].items():
        info = coreml_describe.inspect_package(path)
        assert [i["name"] for i in info["inputs"]] == specs[name].input_names
        assert [o["name"] for o in info["outputs"]] == specs[name].output_names
        assert all(o["dtype"] == "FLOAT32" for o in info["outputs"])
        # one image at a time: window attention (vision), per-image box pooling (heads)
        assert all(i["shape"][0] == 1 and "enumerated" not in i and "range" not in i for i in info["inputs"])
        assert json.loads(info["metadata"]["com.litetext.batch_sizes"]) == [1]
        assert {"vision_encoder": "rank 6", "heads": "unbind"}[name] in info["metadata"]["com.litetext.batch_fixed_because"]
        assert info["ops"].get("constexpr_blockwise_shift_scale", 0) > 0
    heads = coreml_describe.inspect_package(tiny_vision_heads["paths"]["heads"])
    assert [i["dtype"] for i in heads["inputs"]] == ["FLOAT32"] * 4 + ["INT32"]
    assert json.loads(heads["metadata"]["com.litetext.fp16_guard"])  # the heads' masks had sentinels too


def test_vision_encoder_and_heads_simulated_parity(tiny_vision_heads):
    loaded, padding, specs = tiny_vision_heads["loaded"], tiny_vision_heads["padding"], tiny_vision_heads["specs"]
    for name in ("vision_encoder", "heads"):
        graph = build_graph(name, loaded, CTX, padding)
        reference = TorchRunner(graph, specs[name])
        feed = tiny_vision_heads["feeds"][name]
        for precision in ("fp16", "w8"):
            figures = coreml_simulate.measure_parity(reference, coreml.simulated_runner(graph, specs[name], precision), [feed])
            for output, fig in figures.items():
                assert fig["cosine_min"] > 0.999, (name, precision, output, fig)
        agreement = coreml_simulate.weight_agreement(tiny_vision_heads["paths"][name], graph, "w8")
        assert agreement["bit_exact"] == agreement["package_compressed"] > 0, agreement


def test_heads_stop_constant_folding_at_their_limit(tiny_vision_heads, tmp_path, monkeypatch):
    # At full size the heads' first decoder layer folds into a [1, 8, 201, 5184] constant (15.9 MiB of fp16 that
    # w8 cannot compress): the heads' pipeline stops folding above FOLD_LIMITS, other graphs fold everything.
    options = coreml_convert._pipeline(ct, True, coreml_options.FOLD_LIMITS["heads"]).get_options("common::const_elimination")
    assert [(o.option_name, o.option_val) for o in options] == [("skip_const_by_size", "4000000")]
    assert coreml_convert._pipeline(ct, True, coreml_options.FOLD_LIMITS.get("text_encoder")).get_options("common::const_elimination") is None
    # Tiny heads fold nothing that large; a limit below their largest folded constant keeps its ops instead.
    loaded, padding, specs = tiny_vision_heads["loaded"], tiny_vision_heads["padding"], tiny_vision_heads["specs"]

    def operations(limit):
        monkeypatch.setitem(coreml_options.FOLD_LIMITS, "heads", limit)
        path = coreml.export_graph(build_graph("heads", loaded, CTX, padding), specs["heads"],
                                   tiny_vision_heads["feeds"]["heads"], tmp_path / f"heads-{limit}.mlpackage", "fp16",
                                   deployment_target="iOS18")
        return sum(coreml_describe.inspect_package(path)["ops"].values())

    assert operations(1000) > operations(4_000_000)  # what is not folded stays as operations


def test_open_runner_on_linux_says_to_simulate(text_packages):
    if coreml.can_predict():
        pytest.skip("Core ML runs here")
    with pytest.raises(LitetextError, match="need macOS.*simulated_runner"):
        CoreMLRunner(text_packages["paths"]["fp16"], text_packages["spec"], "fp16")


def test_runner_cuts_any_batch_into_accepted_sizes():
    runner = object.__new__(CoreMLRunner)
    runner.batch_sizes, runner.max_batch, runner.path = [1, 2, 4, 8], 8, "p"
    assert runner._chunks(3) == [2, 1] and runner._chunks(13) == [8, 4, 1] and runner._chunks(8) == [8]
    runner.batch_sizes = None
    assert runner._chunks(19) == [8, 8, 3]


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predict needs macOS; on Linux parity is simulated")
def test_coreml_runner_predicts_like_torch_on_macos(text_packages):
    graph, spec, padding = text_packages["graph"], text_packages["spec"], text_packages["padding"]
    if not coreml.can_predict():
        pytest.skip("coremltools' native predict library is not available")
    batches = [feed_for(spec, b) for b in text_batches(builtin_prompts()[:24], padding, 12)]  # 12 = 8 + 4
    reference = TorchRunner(graph, spec)
    for precision in ("fp16", "w8"):
        runner = CoreMLRunner(text_packages["paths"][precision], spec, precision, compute_units="CPU_ONLY")
        figures = coreml_simulate.measure_parity(reference, runner, batches)["text_features"]
        simulated = coreml_simulate.measure_parity(reference, coreml.simulated_runner(graph, spec, precision), batches)
        assert figures["cosine_min"] > 0.999, figures
        assert abs(figures["cosine_mean"] - simulated["text_features"]["cosine_mean"]) < 1e-3
        runner.close()


def test_tiny_s0_upstream_padding_enumerates_the_single_input(tmp_path, tiny_s0):
    padding = get_padding("upstream")
    spec = describe_graphs(tiny_s0, CTX, padding)["text_encoder"]
    graph = build_graph("text_encoder", tiny_s0, CTX, padding)
    example = feed_for(spec, text_batches(["cat", "dog"], padding)[0])
    path = coreml.export_graph(graph, spec, example, tmp_path / "t.mlpackage", "fp16", batch_sizes=(1, 4, 16))
    info = coreml_describe.inspect_package(path)
    assert info["inputs"][0]["enumerated"] == [[1, CTX], [4, CTX], [16, CTX]]  # one input: enumerated on iOS17
    assert json.loads(info["metadata"]["com.litetext.fp16_guard"]) == []  # no mask, nothing to guard


def test_graph_manifest_and_fp16_headroom(text_packages):
    entry = coreml_describe.graph_manifest(text_packages["paths"]["w8a8"], text_packages["spec"], "w8a8")["coreml"]
    assert entry["deployment_target"] == "iOS18" and entry["batch_sizes"] == [1, 2, 4, 8]
    assert entry["compression_ops"]["constexpr_blockwise_shift_scale"] == 11 and entry["compression_ops"]["quantize"] > 0
    assert entry["fp16_guard"][0]["replaced_by"] == coreml_options.MASK_MAGNITUDE and entry["fp16_subnormal_constants"] == []
    assert ("simulated" in entry["parity_runtime"]) != coreml.can_predict()
    graph, spec, padding = text_packages["graph"], text_packages["spec"], text_packages["padding"]
    headroom = coreml_simulate.fp16_headroom(graph, spec, text_batches(builtin_prompts()[:16], padding))
    assert headroom["layer_norm_worst"].startswith("text.") and 0 < headroom["layer_norm_max_deviation"] < 256
    assert 0 < headroom["layer_output_max_abs"] < coreml_options.FP16_MAX


def test_export_bundle_with_the_coreml_target(tmp_path, tiny_s0):
    """Where Core ML cannot predict, export_bundle measures parity with coreml.simulated_runner."""
    import litetext.export as export

    manifest = export.export_bundle(tiny_s0, tmp_path / "b", target="coreml", graphs=["text_encoder"],
                                    precision="fp16", target_options={"deployment_target": "iOS17"})
    graph = manifest["graphs"]["text_encoder"]
    assert graph["file"] == "text_encoder.mlpackage" and graph["bytes"] > 0 and len(graph["sha256"]) == 64
    assert graph["parity"]["outputs"]["text_features"]["cosine_min"] > 0.9999
    from litetext.bundle import Bundle

    assert Bundle.open(tmp_path / "b").graphs == ["text_encoder"]
