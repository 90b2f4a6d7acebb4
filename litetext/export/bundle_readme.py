"""The README.md every bundle carries: what each graph takes and returns, how to build every input from a prompt
and an image, the post-processing, and a minimal code path per runtime the bundle targets. It is generated from
the manifest alone (`bundle_readme(manifest)`), so it cannot drift from what the bundle holds.

The Python code path (ONNX Runtime, numpy, tokenizers, Pillow) runs as written in the bundle's folder
(tests/test_bundle_readme.py runs it); the Swift (Core ML) and C++ (TensorRT) paths are written against those
runtimes' public APIs and are not compiled here.
"""

from __future__ import annotations

from typing import Any

README = "README.md"
SWIFT_TYPES = {"int32": ".int32", "float32": ".float32", "float16": ".float16"}


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _tensors(items) -> str:
    return "<br>".join(f"`{t['name']}` {t['dtype']} {_shape(t['shape'])}" for t in items)


def _graph_table(manifest: dict[str, Any]) -> list[str]:
    lines = ["| graph | file | takes | returns | size |", "|---|---|---|---|---|"]
    for name, g in manifest["graphs"].items():
        lines.append(f"| {name} | `{g['file']}` | {_tensors(g['inputs'])} | {_tensors(g['outputs'])} | "
                     f"{g['bytes'] / 2**20:.1f} MiB |")
    lines.append("")
    lines.append("`batch` is dynamic" + (" (Core ML: the enumerated sizes in each package)"
                                         if manifest["target"] == "coreml" else "") + ".")
    if any("runner_dtype" in t for g in manifest["graphs"].values() for t in g["inputs"]):
        lines.append("Core ML packages take int32 ids and masks: cast the tokenizer's ids before feeding them.")
    return lines


def _inputs_section(manifest: dict[str, Any]) -> list[str]:
    tok, pad, pre = manifest["tokenizer"], manifest["text_padding"], manifest["preprocess"]
    graphs = manifest["graphs"]
    lines = ["## Inputs from a prompt and an image", ""]
    if "text_encoder" in graphs or "heads" in graphs:
        lines += [
            f"**Prompt -> `input_ids`, `attention_mask`** [batch, {tok['context_length']}]: `{tok['file']}` (CLIP BPE in "
            "the `tokenizers` format, padding and truncation set) lowercases and cleans the prompt, splits it into "
            f"BPE tokens and writes start id {tok['start_id']}, the token ids, end id {tok['end_id']}; a prompt longer "
            f"than {tok['context_length']} tokens is cut ({tok.get('truncation', 'keep the end token')}), a shorter one "
            f"is padded with id {tok['pad_id']}. `attention_mask` is 1 from the start token to the end token, 0 on "
            "the pads.",
            "",
            f"Padding convention `{pad['name']}`: " + (
                "the text encoder takes `attention_mask` and masks the pads."
                if pad["attention_masked"] else "the text encoder takes `input_ids` only (the pads are attended to, "
                "as the model was trained); the heads still take `attention_mask`."),
            "",
        ]
        if tok.get("ids", "").startswith("pruned"):
            lines += ["This bundle's text encoder has a pruned token table: `tokenizer.json` holds the NEW ids "
                      "(`pruned_tokens.json` maps them to CLIP's).", ""]
    text_path = manifest.get("text_path") or {}
    if "text_encoder" not in graphs and text_path.get("kind"):
        lines += [f"This bundle has no text encoder: the text features of its fixed prompts are stored "
                  f"({text_path['kind']}; see `text_path` in manifest.json).", ""]
    if "vision_encoder" in graphs:
        size = pre["image_size"]
        lines += [
            f"**Image -> `pixel_values`** [batch, 3, {size}, {size}] ({pre['layout']}): resize {pre['resize']}; "
            f"multiply by {pre['rescale']:.10g}; subtract mean {pre['mean']} and divide by std {pre['std']}, per "
            "channel (RGB).",
            "",
        ]
    if "heads" in graphs:
        lines += ["**Heads**: take the vision encoder's `fpn_0..2` for an image and the text encoder's "
                  "`text_features` with the prompt's `attention_mask`: one prompt per call, as `litetext predict` "
                  "runs them (at 1008 px every prompt in a call adds about 1.2 GiB of working memory)."]
        semantics = manifest.get("heads_semantics") or {}
        if semantics.get("heads_inputs"):
            lines.append(f"Heads semantics `{semantics.get('name')}`: {semantics['heads_inputs']}.")
        lines.append("")
    return lines


def _post_section(manifest: dict[str, Any]) -> list[str]:
    if "heads" not in manifest["graphs"]:
        return []
    post = manifest["postprocess"]
    return ["## Post-processing", "",
            f"- score of each query = {post['score']}; keep queries with score > {post['threshold']}",
            f"- boxes: {post['boxes']}",
            f"- masks: {post['masks']}, then > {post['mask_threshold']}", ""]


# litetext.image_resize.resize_antialiased, written out for an app: the same operations in the same order.
RESIZE_CODE = [
    "def resize(rgb, size):  # antialiased bilinear: a triangle filter whose support grows with the downscale",
    "    def along(x, n, axis):",
    "        m = x.shape[axis]; scale = m / n; support = max(scale, 1.0)",
    "        centers = scale * (np.arange(n) + 0.5)",
    "        starts = np.maximum((centers - support + 0.5).astype(np.int64), 0)",
    "        stops = np.minimum((centers + support + 0.5).astype(np.int64), m)",
    "        taps = starts[:, None] + np.arange(int((stops - starts).max()))[None, :]",
    "        w = np.maximum(0.0, 1.0 - np.abs((taps - centers[:, None] + 0.5) / support))",
    "        w[taps >= stops[:, None]] = 0.0",
    "        w /= w.sum(axis=1, keepdims=True)",
    "        x = np.moveaxis(x, axis, 0)",
    "        out = np.zeros((n, *x.shape[1:]), dtype=np.float32)",
    "        for k in range(taps.shape[1]):",
    "            out += w[:, k].astype(np.float32).reshape((n,) + (1,) * (x.ndim - 1)) * x[np.minimum(taps[:, k], m - 1)]",
    "        return np.moveaxis(out, 0, axis)",
    "    x = along(along(np.asarray(rgb, dtype=np.float32), size, 1), size, 0)",
    "    return np.clip(np.rint(x), 0, 255).astype(np.uint8)",
]


def _python(manifest: dict[str, Any]) -> list[str]:
    graphs, pre, post = manifest["graphs"], manifest["preprocess"], manifest["postprocess"]
    code = ["import numpy as np", "import onnxruntime as ort", "from PIL import Image", "from tokenizers import Tokenizer",
            "", 'folder = "."  # this bundle', 'prompt = "a cat"', "", "def run(graph, feed):",
            "    session = ort.InferenceSession(f\"{folder}/{graph}\", providers=[\"CPUExecutionProvider\"])",
            "    names = [i.name for i in session.get_inputs()]",
            "    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {n: feed[n] for n in names})))",
            ""]
    if "text_encoder" in graphs or "heads" in graphs:
        code += [f'encoded = Tokenizer.from_file(f"{{folder}}/{manifest["tokenizer"]["file"]}").encode_batch([prompt])',
                 "input_ids = np.array([e.ids for e in encoded], dtype=np.int64)",
                 "attention_mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)  # 1 = token, 0 = pad"]
    if "text_encoder" in graphs:
        code += [f"text = run(\"{graphs['text_encoder']['file']}\", {{\"input_ids\": input_ids, \"attention_mask\": "
                 "attention_mask})", "text_features = text[\"text_features\"]"]
    if "vision_encoder" in graphs:
        size = pre["image_size"]
        code += ["", *RESIZE_CODE, "", 'image = Image.open("photo.jpg").convert("RGB")',
                 f"resized = resize(np.asarray(image), {size})  # the manifest's resize, exactly",
                 f"x = resized.astype(np.float32) * {pre['rescale']!r}",
                 f"x = (x - np.array({pre['mean']}, dtype=np.float32)) / np.array({pre['std']}, dtype=np.float32)",
                 "pixel_values = x.transpose(2, 0, 1)[None].astype(np.float32)",
                 f"levels = run(\"{graphs['vision_encoder']['file']}\", {{\"pixel_values\": pixel_values}})"]
    if {"text_encoder", "vision_encoder", "heads"} <= set(graphs):
        upstream = (manifest.get("heads_semantics") or {}).get("name") == "upstream"
        code += ["", "heads_mask = attention_mask * (input_ids != 0)  # heads semantics upstream: ids 0 are not attended to"
                 if upstream else "heads_mask = attention_mask",
                 f"out = run(\"{graphs['heads']['file']}\", {{**levels, \"text_features\": text_features, "
                 "\"attention_mask\": heads_mask})",
                 "sigmoid = lambda v: 1 / (1 + np.exp(-v))",
                 "scores = sigmoid(out[\"pred_logits\"][0]) * sigmoid(out[\"presence_logits\"][0, 0])",
                 f"keep = np.flatnonzero(scores > {post['threshold']})",
                 "width, height = image.size",
                 "boxes = out[\"pred_boxes\"][0, keep] * np.array([width, height, width, height])",
                 "masks = [np.asarray(Image.fromarray(sigmoid(m).astype(np.float32), mode=\"F\").resize((width, height), "
                 f"Image.Resampling.BILINEAR)) > {post['mask_threshold']} for m in out[\"pred_masks\"][0, keep]]",
                 "print(f\"{len(keep)} instances of {prompt!r}\")"]
    return ["### Python (ONNX Runtime)", "",
            "`pip install onnxruntime numpy pillow tokenizers`; put a photo at `photo.jpg` and run in this folder:", "",
            "```python", *code, "```", ""]


def _example_graph(manifest: dict[str, Any]) -> dict[str, Any]:
    """The graph a code example calls: the text encoder when the bundle has one, else its first graph."""
    graphs = manifest["graphs"]
    return graphs["text_encoder"] if "text_encoder" in graphs else next(iter(graphs.values()))


def _swift(manifest: dict[str, Any]) -> list[str]:
    g = _example_graph(manifest)
    ctx = manifest["context_length"]
    code = ["import CoreML", "", "let configuration = MLModelConfiguration()",
            "configuration.computeUnits = .all  // the package records its compute units in its metadata",
            f"// Xcode compiles {g['file']} into {g['file'].rsplit('.', 1)[0]}.mlmodelc in the app bundle",
            f"let url = Bundle.main.url(forResource: \"{g['file'].rsplit('.', 1)[0]}\", withExtension: \"mlmodelc\")!",
            "let model = try MLModel(contentsOf: url, configuration: configuration)", "var inputs: [String: Any] = [:]"]
    for t in g["inputs"]:
        shape = [1 if isinstance(d, str) else d for d in t["shape"]]
        code.append(f"let {t['name']} = try MLMultiArray(shape: {shape}, dataType: {SWIFT_TYPES.get(t['dtype'], '.float32')})"
                    + (f"  // fill from tokenizer.json (ids of one prompt, {ctx} of them)" if t["name"] == "input_ids"
                       else ""))
        code.append(f"inputs[\"{t['name']}\"] = {t['name']}")
    code += ["let output = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: inputs))"]
    for t in g["outputs"]:
        code.append(f"let {t['name']} = output.featureValue(for: \"{t['name']}\")!.multiArrayValue!  // {_shape(t['shape'])}")
    return ["### Swift (Core ML)", "",
            "Not compiled here. `tokenizer.json` loads with swift-transformers' `Tokenizers`; every graph is "
            "called the same way (its inputs and outputs are in the table above).", "",
            "```swift", *code, "```", ""]


def _cpp(manifest: dict[str, Any]) -> list[str]:
    g = _example_graph(manifest)
    stem = g["file"].rsplit(".", 1)[0]
    code = ["#include <NvInfer.h>", "// plan: the bytes of the engine file; logger: your nvinfer1::ILogger",
            "auto runtime = std::unique_ptr<nvinfer1::IRuntime>(nvinfer1::createInferRuntime(logger));",
            "auto engine = std::unique_ptr<nvinfer1::ICudaEngine>(runtime->deserializeCudaEngine(plan.data(), plan.size()));",
            "auto context = std::unique_ptr<nvinfer1::IExecutionContext>(engine->createExecutionContext());"]
    for t in g["inputs"]:
        dims = ", ".join("batch" if isinstance(d, str) else str(d) for d in t["shape"])
        code.append(f"context->setInputShape(\"{t['name']}\", nvinfer1::Dims{{{len(t['shape'])}, {{{dims}}}}});"
                    f"  // {t['dtype']}")
    for t in (*g["inputs"], *g["outputs"]):
        code.append(f"context->setTensorAddress(\"{t['name']}\", device_{t['name']});  // {t['dtype']} {_shape(t['shape'])}")
    code.append("context->enqueueV3(stream);")
    return ["### C++ (TensorRT)", "",
            f"Not compiled here. Build the engine on the device: `litetext build-engine .` (or the trtexec recipe "
            f"`{stem}.trt10.sh` beside the graph), giving `{stem}.trt<major>.plan`; then:", "",
            "```cpp", *code, "```", ""]


def bundle_readme(manifest: dict[str, Any]) -> str:
    """The bundle's README.md, from its manifest."""
    target, model = manifest["target"], manifest["model"]
    title = model.get("preset") or model.get("model_type")
    lines = [f"# {title}: {', '.join(manifest['graphs'])} for {target} ({manifest['precision']})", "",
             f"Made by litetext {manifest.get('tools', {}).get('litetext', '')} from {model['weights_label']}. "
             "Generated from manifest.json, which has every figure (parity, calibration, tools); "
             "`litetext info .` prints it.", "", "## Graphs", "", *_graph_table(manifest), "",
             *_inputs_section(manifest), *_post_section(manifest), "## Code", ""]
    if target in ("onnx", "tensorrt"):
        lines += _python(manifest)
    if target == "tensorrt":
        lines += _cpp(manifest)
    if target == "coreml":
        lines += _swift(manifest)
    return "\n".join(lines).rstrip() + "\n"
