"""TensorRT target: symmetric int8 Q/DQ with fp16 elsewhere (opset 19), recipes per TensorRT version, a calibration
cache for implicit INT8, a static checker fed broken graphs, and the commands. Engines are built and run only where
tensorrt imports and a GPU is present (skipped here, with the reason)."""

import json
import shutil
import struct
import subprocess

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper


from litetext.errors import LitetextError
from litetext.export import export_bundle
from litetext.export import tensorrt as trt_target
from litetext.export.tensorrt import __main__ as trt_main
from litetext.export.tensorrt import qdq as trt_qdq
from litetext.runtimes import tensorrt_engine as trt_engine
from litetext.export.tensorrt.check import check_model, errors_of

TINY_VOCAB, TINY_WIDTH = 49408, 32


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, tiny_s0):
    out = tmp_path_factory.mktemp("trt") / "int8"
    return out, export_bundle(tiny_s0, out, target="tensorrt", graphs=["text_encoder"], precision="int8")


@pytest.fixture(scope="module")
def int8_model(int8_bundle):
    out, _ = int8_bundle
    return onnx.load(out / "text_encoder.onnx")


def _text_parity(graph):
    parity = graph["parity"]
    return parity.get("outputs", parity)["text_features"]  # newer manifests group figures under "outputs"


def _inits(model):
    return {t.name: t for t in model.graph.initializer}


def test_int8_qdq_is_symmetric_int8_with_fp16_elsewhere(int8_model):
    model, inits = int8_model, _inits(int8_model)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 19
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) == 53  # 19 Q + 19 activation DQ + 15 weight DQ on the tiny S0 (3 layers)
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.data_type == TensorProto.INT8, node.name
        assert not numpy_helper.to_array(zero).any(), node.name
        assert inits[node.input[1]].data_type == TensorProto.FLOAT16, node.name
    assert not any(t.data_type in (TensorProto.UINT8, TensorProto.INT32) for t in model.graph.initializer)
    # every Conv and MatMul runs in INT8: its inputs come from DequantizeLinear
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul"):
            assert all(producers[i].op_type == "DequantizeLinear" for i in node.input[:2]), node.name
    # the token table stays in floating point (fp16): TensorRT runs Gather in float
    table = [t for t in model.graph.initializer if list(t.dims) == [TINY_VOCAB, TINY_WIDTH]]
    assert len(table) == 1 and table[0].data_type == TensorProto.FLOAT16
    # fp16 everywhere but the fp32 inputs/outputs
    assert {t.data_type for t in model.graph.initializer} <= {TensorProto.FLOAT16, TensorProto.INT8, TensorProto.INT64}
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_int8_weights_are_per_output_channel(int8_model):
    model, inits = int8_model, _inits(int8_model)
    consumers = {i: n for n in model.graph.node for i in n.input}
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weights) == 15
    for dq in weights:
        w, scale = inits[dq.input[0]], numpy_helper.to_array(inits[dq.input[1]])
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        want = 0 if consumers[dq.output[0]].op_type == "Conv" else len(w.dims) - 1
        assert axis == want and scale.size == w.dims[want], dq.name
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(numpy_helper.to_array(inits[n.input[1]]).size == 1 for n in activations)


def test_int8_parity_in_onnxruntime_and_manifest(int8_bundle):
    out, manifest = int8_bundle
    graph = manifest["graphs"]["text_encoder"]
    assert manifest["target"] == "tensorrt" and manifest["precision"] == "int8"
    fig = _text_parity(graph)
    assert fig["cosine_mean"] >= 0.995 and fig["cosine_worst_1pct"] >= 0.98 and fig["max_abs_error"] > 0
    calib = graph["calibration"]
    assert calib["flavour"] == "TensorRT explicit quantization (Q/DQ)" and calib["layers_kept_fp16"] == []
    assert calib["qdq_nodes"] == {"QuantizeLinear": 19, "DequantizeLinear_weights": 15,
                                  "DequantizeLinear_activations": 19, "quantized_ops": 17}
    sidecar = json.loads((out / "text_encoder.tensorrt.json").read_text())
    assert sidecar["static_check"]["errors"] == 0 and sidecar["opset"] == 19
    assert "ONNX Runtime on the CPU" in trt_target.parity_runtime() or trt_engine.tensorrt_usable()


def _layer_bytes(model):
    """Bytes of the weights other than the token table."""
    return sum(len(t.raw_data) for t in model.graph.initializer if list(t.dims) != [TINY_VOCAB, TINY_WIDTH])


def test_int8_layers_are_half_of_fp16(int8_bundle, int8_model, tmp_path, tiny_s0):
    fp16 = export_bundle(tiny_s0, tmp_path / "fp16", target="tensorrt", graphs=["text_encoder"], precision="fp16")
    model = onnx.load(tmp_path / "fp16" / "text_encoder.onnx")
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    assert errors_of(check_model(model)) == []
    assert not (tmp_path / "fp16" / "text_encoder.calib.cache").exists()
    assert _text_parity(fp16["graphs"]["text_encoder"])["cosine_min"] >= 0.999
    # the tiny model is mostly its token table, which stays fp16 in both: the layers are what shrinks
    ratio = _layer_bytes(int8_model) / _layer_bytes(model)
    assert 0.5 < ratio < 0.6, ratio  # int8 weights, plus fp16 per-channel scales


def test_vision_encoder_fp16(tmp_path, tiny_s0):
    """Conv, ConvTranspose and attention in fp16 at opset 19; the profile covers the batch of images."""
    manifest = export_bundle(tiny_s0, tmp_path / "v", target="tensorrt", graphs=["vision_encoder"], precision="fp16")
    model = onnx.load(tmp_path / "v" / "vision_encoder.onnx")
    assert {"Conv", "ConvTranspose", "MatMul"} <= {n.op_type for n in model.graph.node}
    assert errors_of(check_model(model)) == []
    recipe = (tmp_path / "v" / "vision_encoder.trt10.sh").read_text()
    assert "--minShapes=pixel_values:1x3x112x112 --optShapes=pixel_values:8x3x112x112" in recipe
    sidecar = json.loads((tmp_path / "v" / "vision_encoder.tensorrt.json").read_text())
    assert sidecar["dla"]["serves"] is False and sidecar["dla"]["lacking"]["LayerNormalization"] == 5
    figures = manifest["graphs"]["vision_encoder"]["parity"]
    assert all(f["cosine_min"] >= 0.999 for f in figures.get("outputs", figures).values() if isinstance(f, dict) and "cosine_min" in f)


def test_vision_encoder_int8_calibrated_on_real_images(tmp_path, tiny_s0):
    """Symmetric Q/DQ on the vision encoder's Conv and MatMul inputs, calibrated on one photo, measured on another."""
    from litetext.calibration.data import builtin_asset

    manifest = export_bundle(tiny_s0, tmp_path / "v", target="tensorrt", graphs=["vision_encoder"], precision="int8",
                             calib_images=[builtin_asset("rocket.jpg")], parity_images=[builtin_asset("chelsea.png")])
    model = onnx.load(tmp_path / "v" / "vision_encoder.onnx")
    assert errors_of(check_model(model)) == []
    quantized = {n.op_type for n in model.graph.node for i in n.input
                 if any(q.op_type == "DequantizeLinear" and i in q.output for q in model.graph.node)}
    assert {"Conv", "MatMul"} <= quantized
    graph = manifest["graphs"]["vision_encoder"]
    assert graph["calibration"]["calibration_images"] == ["rocket.jpg"]
    assert all(f["cosine_mean"] >= 0.98 for f in graph["parity"]["outputs"].values())


def test_held_out_parity_on_shared_prompts(int8_bundle, shared):
    from litetext.calibration.data import read_prompts
    from litetext.calibration.parity import merge_parity, tensor_parity
    from litetext.bundle import Bundle
    from litetext.models.graphs import build_graph, get_padding
    from litetext.runtimes.torch_runner import TorchRunner
    from litetext.tokenizer import ClipTokenizer
    from conftest import tiny_model

    out, _ = int8_bundle
    prompts = read_prompts([shared / "prompts" / "eval"])
    rng = np.random.default_rng(0)
    prompts = [prompts[i] for i in sorted(rng.choice(len(prompts), 200, replace=False))]
    bundle = Bundle.open(out)
    tokens = ClipTokenizer()(prompts, context_length=16, pad_id=0)
    runner = bundle.runner("text_encoder")
    assert "TensorRT absent" in runner.runtime or trt_engine.tensorrt_usable()
    reference = TorchRunner(build_graph("text_encoder", tiny_model(), 16, get_padding("upstream")), bundle.spec("text_encoder"))
    parts = []
    for i in range(0, len(prompts), 50):
        feed = {"input_ids": tokens.input_ids[i : i + 50]}
        parts.append(tensor_parity(reference.infer(feed)["text_features"], runner.infer(feed)["text_features"],
                                   tokens.attention_mask[i : i + 50], per_token=True))
    fig = merge_parity(parts)
    assert fig["cosine_mean"] >= 0.995 and fig["cosine_worst_1pct"] >= 0.98, fig


def test_recipes_per_tensorrt_version(int8_bundle):
    out, _ = int8_bundle

    def commands(text):
        return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    trt10 = (out / "text_encoder.trt10.sh").read_text()
    trt11 = (out / "text_encoder.trt11.sh").read_text()
    shapes = "--minShapes=input_ids:1x16 --optShapes=input_ids:8x16 --maxShapes=input_ids:32x16"
    for text in (trt10, trt11):
        assert shapes in text and "--timingCacheFile=" in text
        assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    run10 = " ".join(commands(trt10))
    assert "--stronglyTyped" in run10 and "--fp16" not in run10 and "--int8" not in run10
    run11 = " ".join(commands(trt11))
    assert not any(flag in run11 for flag in ("--stronglyTyped", "--fp16", "--int8", "--calib", "--best"))
    # the implicit INT8 and DLA alternatives are TensorRT <= 10 only, and offered commented out
    assert "--int8 --fp16 --calib=text_encoder.calib.cache" in trt10 and "--calib" not in trt11
    assert "--useDLACore=0 --allowGPUFallback" in trt10 and "not recommended for this graph" in trt10


def test_calibration_cache_matches_the_graph(int8_bundle, int8_model):
    out, _ = int8_bundle
    header, scales = trt_engine.read_calibration_cache(out / "text_encoder.calib.cache")
    assert header == "TRT-100300-EntropyCalibration2"
    lines = (out / "text_encoder.calib.cache").read_text().splitlines()[1:]
    assert all(len(line.rpartition(": ")[2]) == 8 for line in lines)
    inits = _inits(int8_model)
    quantized = {n.input[0]: float(numpy_helper.to_array(inits[n.input[1]]))
                 for n in int8_model.graph.node if n.op_type == "QuantizeLinear"}
    assert set(quantized) <= set(scales)  # every quantized activation has its scale in the cache
    for name, scale in quantized.items():  # same scale (amax/127); the graph's is fp16
        assert scales[name] == pytest.approx(scale, rel=2e-3, abs=1e-7), name
    stripped = trt_engine.strip_qdq(int8_model)
    names = {o for n in stripped.graph.node for o in n.output}
    assert set(scales) <= names and len(scales) >= 70


def test_cache_format_and_versions(tmp_path):
    assert trt_engine.tensorrt_version_int("8.6.1") == 8601
    assert trt_engine.tensorrt_version_int("10.3.0") == 100300
    assert trt_engine.tensorrt_version_int("10.13.2.6") == 101302
    header = trt_qdq.write_calibration_cache(tmp_path / "c", {"x": 127.0, "y": 1.0, "dead": 0.0}, "10.7.0")
    assert header == "TRT-100700-EntropyCalibration2"
    assert (tmp_path / "c").read_text() == "TRT-100700-EntropyCalibration2\nx: 3f800000\ny: 3c010204\n"
    assert trt_engine.read_calibration_cache(tmp_path / "c")[1] == {"x": 1.0, "y": struct.unpack(">f", bytes.fromhex("3c010204"))[0]}


def test_strip_qdq_gives_the_implicit_graph(int8_bundle, tmp_path, tiny_s0):
    import onnxruntime as ort
    import torch

    from litetext.models.graphs import build_graph, get_padding

    out, _ = int8_bundle
    implicit = tmp_path / "implicit.onnx"
    assert trt_main.main(["strip-qdq", str(out / "text_encoder.onnx"), str(implicit)]) == 0
    model = onnx.load(implicit)
    onnx.checker.check_model(model, full_check=True)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    assert errors_of(check_model(model)) == []
    feed = {"input_ids": np.array([[49406, 320, 2368, 49407] + [0] * 12] * 2, dtype=np.int64)}
    explicit = ort.InferenceSession(str(out / "text_encoder.onnx")).run(None, feed)[0]
    stripped = ort.InferenceSession(str(implicit)).run(None, feed)[0]
    with torch.no_grad():
        fp32 = build_graph("text_encoder", tiny_s0, 16, get_padding("upstream"))(torch.as_tensor(feed["input_ids"]))

    def cosine(a, b):
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    # The same weights (int8-rounded) without activation rounding: within 0.999 of fp32 on every token, and
    # nearer fp32 than the Q/DQ graph. (Stress weights: stripped vs fp32 min 0.99979; activation rounding alone,
    # Q/DQ vs stripped, costs up to 0.0021, judged by the INT8 gate, where transformers' weights cost < 0.001.)
    assert cosine(stripped, fp32.numpy()).min() > 0.999
    assert cosine(stripped, fp32.numpy()).mean() > cosine(explicit, fp32.numpy()).mean()


def test_onnxruntime_int8_is_not_tensorrt_ready(int8_bundle, tmp_path, tiny_s0):
    """litetext's ONNX Runtime INT8 (uint8 activations with zero points, Q/DQ shared with every consumer) is what
    the checker exists to catch."""
    from litetext.calibration.int8 import Int8Calibration, quantize_int8
    from litetext.export.onnx import export_graph
    from litetext.models.graphs import build_graph, describe_graphs, get_padding
    from litetext.tokenizer import ClipTokenizer

    padding = get_padding("upstream")
    spec = describe_graphs(tiny_s0, 16, padding)["text_encoder"]
    tokens = ClipTokenizer()(["a cat", "two red buses on a street", "the dog on the left", "sky"] * 4, 16, pad_id=0)
    feeds = [{"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}]
    export_graph(build_graph("text_encoder", tiny_s0, 16, padding), spec, {"input_ids": tokens.input_ids[:2]},
                 tmp_path / "fp32.onnx", "fp32")
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "ort.onnx", Int8Calibration(feeds, target_cosine_mean=0.0,
                                                                                  target_cosine_worst_1pct=0.0))
    codes = {f.code for f in errors_of(check_model(tmp_path / "ort.onnx"))}
    assert {"uint8-qdq", "nonzero-zero-point", "qdq-misplaced"} <= codes


# --- the checker on hand-built graphs ----------------------------------------------------------------------------


def _graph(nodes, inits, opset=19, inputs=(("x", [2, 4]),), outputs=(("y", [2, 3]),)):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _t(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _good_nodes(zp_type=np.int8, zp_value=0, w_axis=1, consumer="MatMul"):
    inits = [
        _t("s", np.float32(0.02)), _t("zp", np.array(zp_value, dtype=zp_type)),
        _t("w_q", np.arange(12, dtype=np.int8).reshape(4, 3)), _t("w_s", np.full(3 if w_axis == 1 else 4, 0.01, np.float32)),
        _t("w_zp", np.zeros(3 if w_axis == 1 else 4, np.int8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "s", "zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="w_DQ", axis=w_axis),
        helper.make_node(consumer, ["x_dq", "w"], ["y"], name="the_matmul"),
    ]
    return nodes, inits


def _codes(model, versions=(10, 11)):
    return {(f.code, f.node) for f in errors_of(check_model(model, versions))}


def test_checker_passes_a_good_graph():
    nodes, inits = _good_nodes()
    model = _graph(nodes, inits)
    onnx.checker.check_model(model, full_check=True)
    assert check_model(model) == []


def test_checker_flags_unsupported_ops():
    nodes, inits = _good_nodes()
    nodes[-1].output[0] = "mm"
    nodes += [helper.make_node("Unique", ["mm"], ["y"], name="the_unique")]
    assert ("unsupported-op", "the_unique") in _codes(_graph(nodes, inits))
    custom = _graph([helper.make_node("FastGelu", ["x"], ["y"], name="ms_gelu", domain="com.microsoft")], [],
                    outputs=(("y", [2, 4]),))
    assert ("unsupported-op", "ms_gelu") in _codes(custom)
    # RMSNormalization came in TensorRT 10.15: an error for the 10.x baseline (JetPack 6's 10.3), fine for 11
    rms = _graph([helper.make_node("RMSNormalization", ["x", "g"], ["y"], name="rms")], [_t("g", np.ones(4, np.float32))],
                 opset=23, outputs=(("y", [2, 4]),))
    assert ("unsupported-op", "rms") in _codes(rms, (10,)) and _codes(rms, (11,)) == set()
    assert ("opset", "") in _codes(rms, (10,))  # opset 23 is past TensorRT 10.3's parser


def test_checker_flags_uint8_qdq():
    nodes, inits = _good_nodes(zp_type=np.uint8, zp_value=128)
    found = _codes(_graph(nodes, inits))
    assert ("uint8-qdq", "x_Q") in found and ("uint8-qdq", "x_DQ") in found
    assert ("nonzero-zero-point", "x_Q") in found


def test_checker_flags_nonzero_zero_point():
    nodes, inits = _good_nodes(zp_value=3)
    found = _codes(_graph(nodes, inits))
    assert ("nonzero-zero-point", "x_Q") in found and ("nonzero-zero-point", "x_DQ") in found
    assert not any(code == "uint8-qdq" for code, _ in found)


def test_checker_flags_int32_bias_dq():
    inits = [
        _t("s", np.float32(0.02)), _t("zp", np.int8(0)),
        _t("w_q", np.ones((3, 4, 1, 1), np.int8)), _t("w_s", np.full(3, 0.01, np.float32)), _t("w_zp", np.zeros(3, np.int8)),
        _t("b_q", np.array([5, -2, 7], np.int32)), _t("b_s", np.full(3, 0.0002, np.float32)), _t("b_zp", np.zeros(3, np.int32)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "s", "zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="w_DQ", axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_zp"], ["b"], name="bias_DQ", axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], name="the_conv"),
    ]
    model = _graph(nodes, inits, inputs=(("x", [1, 4, 5, 5]),), outputs=(("y", [1, 3, 5, 5]),))
    onnx.checker.check_model(model, full_check=True)
    found = _codes(model)
    assert found == {("int32-dq", "bias_DQ")}


def test_checker_flags_qdq_on_a_non_quantizable_op():
    nodes, inits = _good_nodes()
    nodes.insert(3, helper.make_node("Sigmoid", ["x_dq"], ["sig"], name="the_sigmoid"))
    nodes[-1].input[0] = "sig"
    found = _codes(_graph(nodes, inits))
    assert ("qdq-misplaced", "x_DQ") in found
    message = next(str(f) for f in check_model(_graph(nodes, inits)) if f.code == "qdq-misplaced")
    assert "Sigmoid 'the_sigmoid'" in message


def test_checker_flags_weights_on_the_wrong_axis():
    nodes, inits = _good_nodes(w_axis=0)  # MatMul weights [4, 3]: 3 output channels on axis 1
    assert ("weight-axis", "w_DQ") in _codes(_graph(nodes, inits))


def test_checker_allows_a_fused_residual_add():
    nodes, inits = _good_nodes()
    nodes[-1].output[0] = "mm"
    inits += [_t("r_s", np.float32(0.05))]
    nodes += [
        helper.make_node("QuantizeLinear", ["r", "r_s", "zp"], ["r_q"], name="r_Q"),
        helper.make_node("DequantizeLinear", ["r_q", "r_s", "zp"], ["r_dq"], name="r_DQ"),
        helper.make_node("Add", ["mm", "r_dq"], ["y"], name="residual_add"),
    ]
    model = _graph(nodes, inits, inputs=(("x", [2, 4]), ("r", [2, 3])))
    assert check_model(model) == []
    nodes[-1].input[0] = "x_dq_elsewhere"  # the other input no longer comes from the MatMul
    nodes.insert(0, helper.make_node("Relu", ["r"], ["x_dq_elsewhere"], name="relu"))
    assert ("qdq-misplaced", "r_DQ") in _codes(_graph(nodes, inits, inputs=(("x", [2, 4]), ("r", [2, 3]))))


# --- commands ----------------------------------------------------------------------------------------------------


def test_check_command(int8_bundle, tmp_path):
    from litetext.tensorrt_cli import check

    out, _ = int8_bundle
    ok = CliRunner().invoke(check, [str(out), "--target", "tensorrt"])
    assert ok.exit_code == 0, ok.output
    assert "text_encoder: 0 errors" in ok.output
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    nodes, inits = _good_nodes(zp_type=np.uint8, zp_value=128)
    onnx.save(_graph(nodes, inits), broken / "text_encoder.onnx")
    changed = CliRunner().invoke(check, [str(broken), "--tensorrt-version", "10"])
    assert changed.exit_code == 2 and "does not match its sha256" in changed.output  # hashes checked by default
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["graphs"]["text_encoder"].update(inputs=[{"name": "x", "dtype": "float32", "shape": [2, 4]}],
                                              outputs=[{"name": "y", "dtype": "float32", "shape": [2, 3]}])
    (broken / "manifest.json").write_text(json.dumps(manifest))
    bad = CliRunner().invoke(check, [str(broken), "--tensorrt-version", "10", "--json", "--no-verify"])
    assert bad.exit_code == 1
    findings = json.loads(bad.output)["text_encoder"]
    assert {"code": "uint8-qdq", "node": "x_Q"} in [{k: f[k] for k in ("code", "node")} for f in findings]
    wrong = CliRunner().invoke(check, [str(out), "--tensorrt-version", "9"])
    assert wrong.exit_code == 2 and "--tensorrt-version takes 10 or 11" in wrong.output


def test_build_engine_without_tensorrt_says_how_to_get_it(int8_bundle):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from litetext.tensorrt_cli import build_engine

    out, _ = int8_bundle
    result = CliRunner().invoke(build_engine, [str(out), "--tensorrt-version", "10"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: tensorrt is not installed")
    assert "python3-libnvinfer" in lines[0] and "NVIDIA's index" in lines[0]
    with pytest.raises(LitetextError, match="tensorrt is not installed"):
        trt_engine.build_engine(out / "text_encoder.onnx", None, out / "x.plan")


def test_export_rejects_fp32_and_missing_calibration(tmp_path, tiny_s0):
    with pytest.raises(LitetextError, match="exports fp16, int8, not 'fp32'"):
        export_bundle(tiny_s0, tmp_path / "b", target="tensorrt", graphs=["text_encoder"], precision="fp32")
    with pytest.raises(LitetextError, match="needs calibration"):
        trt_target.export_graph(None, None, {}, tmp_path / "x.onnx", "int8", None)


# --- on a machine with TensorRT and a GPU ------------------------------------------------------------------------


def _needs_tensorrt():
    pytest.importorskip("tensorrt", reason="tensorrt is not installed (NVIDIA's index / JetPack): engines not built")
    if not trt_engine.tensorrt_usable():
        pytest.skip("no CUDA device: engines not built")


@pytest.mark.parametrize("implicit", [False, True])
def test_engine_parity_on_the_device(int8_bundle, tmp_path, implicit):
    _needs_tensorrt()
    import tensorrt as trt

    from litetext.bundle import Bundle
    from litetext.runtimes.onnxruntime_runner import OnnxRuntimeRunner
    from litetext.runtimes.tensorrt_runner import TensorRTRunner

    if implicit and int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("implicit INT8 was removed in TensorRT 11")
    out, _ = int8_bundle
    bundle = Bundle.open(out)
    spec = bundle.spec("text_encoder")
    plan = tmp_path / "te.plan"
    built = trt_engine.build_engine(out / "text_encoder.onnx", spec, plan, implicit_int8=implicit)
    assert plan.stat().st_size > 0 and built["implicit_int8"] == implicit
    runner = TensorRTRunner(plan, spec, "int8")
    reference = OnnxRuntimeRunner(out / "text_encoder.onnx", spec, "int8")
    feed = {"input_ids": np.array([[49406, 320, 2368, 49407] + [0] * 12] * 3, dtype=np.int64)}
    got, want = runner.infer(feed)["text_features"], reference.infer(feed)["text_features"]
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.mean() > 0.99
