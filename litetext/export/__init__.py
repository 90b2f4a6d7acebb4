"""Export a loaded model into a bundle for one target, checking every graph against PyTorch.

    loaded = litetext.load_model("litetext-s0", random_init=True, seed=0)
    manifest = litetext.export_bundle(loaded, "out/s0", target="onnx", graphs=["text_encoder"])

Each target is a module with the same functions (`PRECISIONS`, `FILE_SUFFIX`, `export_graph`, `files_of`,
`open_runner`), imported only when that target is asked for.
"""

from __future__ import annotations

import importlib
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from litetext.errors import LitetextError
from litetext.export.bundle import FORMAT_VERSION, MANIFEST, TOKENIZER, BundleWriter, write_json_atomic
from litetext.models.graphs import (END_ID, GRAPH_NAMES, START_ID, build_graph, describe_graphs, get_padding,
                                    model_geometry)
from litetext.files import sha256_of
from litetext.models.loading import LoadedModel

TARGETS = {"onnx": "litetext.export.onnx", "tensorrt": "litetext.export.tensorrt", "coreml": "litetext.export.coreml"}
# Targets the design names that this version cannot make yet: say so instead of pretending.
PLANNED_TARGETS: dict[str, str] = {}


def target_module(name: str):
    if name in PLANNED_TARGETS:
        raise LitetextError(
            f"the {name} target ({PLANNED_TARGETS[name]}) is not implemented in this version of litetext; "
            f"available: {', '.join(TARGETS)}"
        )
    if name not in TARGETS:
        raise LitetextError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[name])


def export_bundle(
    loaded: LoadedModel,
    out: str | Path,
    target: str = "onnx",
    graphs: list[str] | None = None,
    context_length: int | None = None,
    precision: str = "fp32",
    text_padding: str = "upstream",
    parity_prompts: list[str] | None = None,
    parity_images: list[str | Path] | None = None,
    calib_prompts: list[str] | None = None,
    calib_set=None,
    calib_images: list[str | Path] | None = None,
    calib_method: str = "minmax",
    gate: dict[str, float] | None = None,
    target_options: dict[str, Any] | None = None,
    vocabulary: list[str] | None = None,
    vocabulary_precision: str = "fp16",
    prune_vocabulary: list[str] | None = None,
    force: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Export `graphs` of `loaded` to `out` and return the manifest. Fails (writing nothing) when an
    artifact's parity against PyTorch is outside its tolerance.

    INT8 calibrates on `calib_set` (a saved litetext.calibration.sets.CalibrationSet) or on `calib_prompts`
    (default: the built-in tier-A category names) with `calib_method`;
    `gate` lowers the INT8 parity gate explicitly (keys min_cosine_mean, min_cosine_worst_1pct).
    `vocabulary` (a list of prompts) stores their text features (`vocabulary_precision`: fp16 or int8) instead
    of a text_encoder graph; `prune_vocabulary` (a corpus of prompts) keeps only the token-table rows the corpus
    needs in a student's text encoder, with a tokenizer.json of NEW ids; see litetext.vocabulary."""
    from litetext.calibration.data import builtin_images, builtin_prompts, read_images
    from litetext.calibration.parity import instances_agree, passes
    from litetext.runtimes.torch_runner import TorchRunner
    from litetext.tokenizer import write_tokenizer_json

    module = target_module(target)
    if precision not in module.PRECISIONS:
        raise LitetextError(f"the {target} target exports {', '.join(module.PRECISIONS)}, not {precision!r}")
    graphs = list(graphs or GRAPH_NAMES)
    if vocabulary is not None:  # stored features replace the text encoder
        graphs = [g for g in graphs if g != "text_encoder"]
    unknown = [g for g in graphs if g not in GRAPH_NAMES]
    if unknown:
        raise LitetextError(f"unknown graphs {unknown}; choose from: {', '.join(GRAPH_NAMES)}")
    padding = get_padding(text_padding)
    ctx = context_length or _default_context(loaded)
    writer = BundleWriter(out, force)  # fails now, before any work, if OUT exists without --force
    specs = describe_graphs(loaded, ctx, padding)
    target_tolerances = getattr(module, "TOLERANCES", {})  # gates of target-only precisions (coreml w8, w4, ...)
    specs = {g: replace(s, tolerance={**s.tolerance, **target_tolerances.get(g, {})}) for g, s in specs.items()}
    lacking = [g for g in graphs if precision not in specs[g].tolerance]
    if lacking:
        have = [g for g in GRAPH_NAMES if precision in specs[g].tolerance]
        raise LitetextError(
            f"{precision} is available for {', '.join(have)} only in this version, not {', '.join(lacking)}; "
            "export those graphs in fp32 or fp16"
        )
    tolerances = {g: replace(specs[g].tolerance[precision], **(gate or {})) for g in graphs}
    prompts = parity_prompts or builtin_prompts()
    pruning = _pruning(loaded, graphs, vocabulary, prune_vocabulary, prompts, ctx, padding, progress)
    images = read_images(parity_images) if parity_images else builtin_images()
    progress(f"weights: {loaded.weights_label}")

    started = time.perf_counter()
    feeds = GraphFeeds(loaded, ctx, padding, prompts, images, need_images=graphs != ["text_encoder"])
    manifest_graphs: dict[str, Any] = {}
    with writer as tmp:
        for name in graphs:
            spec = specs[name]
            pruned = pruning if name == "text_encoder" else None
            graph = build_graph(name, loaded, ctx, padding, pruned.vocabulary.kept_ids if pruned else None)
            # The reference is always the unpruned graph: a pruned one is checked against it.
            reference = TorchRunner(build_graph(name, loaded, ctx, padding) if pruned else graph, spec)
            batches = pruned.batches() if pruned else feeds.for_graph(name)
            path = tmp / f"{name}{module.FILE_SUFFIX}"
            progress(f"{name}: exporting to {target} {precision}")
            t0 = time.perf_counter()
            calibration = None
            if precision == "int8" or precision in getattr(module, "CALIBRATED_PRECISIONS", ()):
                calibration = _int8_calibration(ctx, padding, calib_prompts, calib_set, calib_method,
                                                pruned.tokenizer if pruned else None)
                if name != "text_encoder":
                    calibration.feeds = _image_calibration_feeds(name, loaded, ctx, padding, calibration, calib_images)
                    # These gates are looser than the text encoder's: search only as far as they ask.
                    calibration.target_cosine_mean = tolerances[name].min_cosine_mean
                    calibration.target_cosine_worst_1pct = tolerances[name].min_cosine_worst_1pct
            options = dict(target_options or {})
            if hasattr(module, "write_metadata"):  # targets that describe their artifacts (coreml)
                options.setdefault("metadata", {"weights": loaded.weights_label})
            module.export_graph(graph, spec, _example(batches), path, precision, calibration, **options)
            export_s = time.perf_counter() - t0
            progress(f"{name}: checking parity on {sum(len(next(iter(b.values()))) for b in batches)} real samples")
            if hasattr(module, "simulated_runner") and not module.can_predict():
                # Core ML predicts on macOS only: elsewhere, the package's compression simulated in PyTorch
                runner = module.simulated_runner(graph, spec, precision, calibration)
            else:
                runner = module.open_runner(path, spec, precision)
            parity = pruned.measure(reference, runner) if pruned else feeds.measure(name, reference, runner, batches)
            runner.close()
            failed = [o for o, fig in parity["outputs"].items() if not passes(fig, tolerances[name])]
            if "instances" in parity and not instances_agree(parity["instances"]):
                failed.append("instances")
            if failed:
                details = "; ".join(f"instances: {parity[o]}" if o == "instances" else f"{o}: {_fmt(parity['outputs'][o])}"
                                    for o in failed)
                raise LitetextError(
                    f"{name} ({target} {precision}) is outside its tolerance "
                    f"{asdict(tolerances[name])}: {details}. Nothing was written"
                )
            if hasattr(module, "write_metadata"):  # parity into the artifact too, before it is hashed
                module.write_metadata(path, {"parity": parity["outputs"], "parity_runtime": module.parity_runtime()})
            files = module.files_of(path)
            if pruned:  # coverage and the uncovered prompts' figures go to text_path
                parity = {"reference": "torch eager fp32, same weights, unpruned, on CLIP's ids",
                          "prompts": "the covered parity prompts (every token kept); the others: text_path",
                          "outputs": parity["outputs"]}
            manifest_graphs[name] = {
                "file": path.name,
                **spec.to_json(),
                "bytes": sum(f.stat().st_size for f in files),
                "sha256": sha256_of(path),
                "parity": {"reference": "torch eager fp32, same weights", **parity},
                "tolerance": {precision: asdict(tolerances[name])},
                "export_seconds": round(export_s, 2),
            }
            if calibration is not None:
                manifest_graphs[name]["calibration"] = calibration.report
            if hasattr(module, "graph_manifest"):  # target facts: recipes, caches, which runtime measured parity
                manifest_graphs[name].update(module.graph_manifest(path, spec, precision))
            progress(f"{name}: ok ({manifest_graphs[name]['bytes'] / 2**20:.1f} MiB, {export_s:.1f} s)")
        text_path = {"kind": "text_encoder"} if "text_encoder" in graphs else None
        if vocabulary is not None:
            from litetext.vocabulary import write_fixed_vocabulary

            progress(f"fixed vocabulary: {len(vocabulary)} prompts, {vocabulary_precision}")
            text_path = write_fixed_vocabulary(loaded, tmp, vocabulary, ctx, padding, vocabulary_precision)
        if pruning is not None:
            from litetext.vocabulary import write_pruned_text_path

            text_path = write_pruned_text_path(tmp, pruning.vocabulary, prune_vocabulary, loaded, ctx, padding,
                                               pruning.figures, manifest_graphs["text_encoder"]["bytes"])
        else:
            write_tokenizer_json(tmp / TOKENIZER, context_length=ctx, pad_id=padding.pad_id)
        manifest = _manifest(loaded, target, precision, ctx, padding, manifest_graphs, prompts, images, module)
        if pruning is not None:  # apps read the special ids here: the pruned tokenizer's
            new = lambda old: int(pruning.vocabulary.old_to_new[old])  # noqa: E731
            manifest["tokenizer"].update(pad_id=new(padding.pad_id), start_id=new(START_ID), end_id=new(END_ID),
                                         vocabulary_size=len(pruning.vocabulary), ids="pruned: see text_path")
        if text_path is not None:
            manifest["text_path"] = text_path
        manifest["export_seconds"] = round(time.perf_counter() - started, 2)
        write_json_atomic(tmp / MANIFEST, manifest)
    progress(f"wrote {Path(out)}")
    return manifest


def _int8_calibration(ctx, padding, calib_prompts, calib_set, method, tokenizer=None):
    """Calibration feeds from a saved set, or from prompts drawn evenly across token lengths (seed 0). A pruned
    text encoder takes other ids: `tokenizer` (its PrunedTokenizer) tokenizes the set's prompts again."""
    import warnings

    from litetext.calibration.data import builtin_calibration_prompts
    from litetext.calibration.int8 import Int8Calibration
    from litetext.calibration.sets import BATCH, build_calibration_set, check_fits

    if calib_set is None:
        calib_set = build_calibration_set(calib_prompts or builtin_calibration_prompts(), ctx, padding.pad_id)
    check_fits(calib_set, ctx, padding.pad_id)
    feeds, report = calib_set.text_feeds(), {"calibration_set": calib_set.summary()}
    if tokenizer is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # long calibration prompts are cut on purpose: they fill the context
            tokens = tokenizer(calib_set.prompts, ctx, padding.pad_id)
        feeds = tokens.feeds(BATCH)
        report["token_ids"] = "the set's prompts tokenized with the pruned tokenizer.json (NEW ids)"
    return Int8Calibration(feeds, method, prompts=len(calib_set.prompts), report=report)


def _pruning(loaded, graphs, vocabulary, corpus, prompts, ctx, padding, progress):
    """The pruned vocabulary of `corpus` and the parity prompts tokenized for it (litetext.vocabulary.PrunedParity),
    or None without a corpus. Fails, before any export, where pruning does not apply."""
    from litetext.models.presets import STUDENT
    from litetext.tokenizer import VOCAB_SIZE
    from litetext.vocabulary import PrunedParity, prune_vocabulary

    if corpus is None:
        return None
    if vocabulary is not None:
        raise LitetextError("--prune-vocabulary prunes the text encoder's token table, and --vocabulary replaces the "
                            "text encoder by stored features: choose one")
    if "text_encoder" not in graphs:
        raise LitetextError("--prune-vocabulary prunes the text_encoder graph; add text_encoder to --graphs")
    if loaded.family != STUDENT:
        raise LitetextError(f"--prune-vocabulary applies to the LiteText students' text encoders, not {loaded.preset} "
                            "(the teacher's CLIP text encoder); export a litetext-s0, -s1 or -l model")
    if not corpus:
        raise LitetextError("--prune-vocabulary needs a corpus of prompts; none were given")
    pruning = PrunedParity(prune_vocabulary(corpus), prompts, ctx, padding)
    progress(f"pruned vocabulary: {len(pruning.vocabulary)} of {VOCAB_SIZE} tokens kept for {len(corpus)} corpus "
             f"prompts; {int(pruning.covered.sum())} of {len(prompts)} parity prompts covered")
    return pruning


def _image_calibration_feeds(name, loaded, ctx, padding, calibration, calib_images):
    """Calibration feeds from real images (the calibration set's, else `calib_images`, else the built-in photos),
    one per batch: the calibrator holds a batch's tensors, gigabytes at 1008 px. The vision encoder takes the
    images; the heads take them through the PyTorch vision encoder, each with two calibration prompts through
    the PyTorch text encoder."""
    from litetext.calibration.data import builtin_images, read_images

    recorded = [i["path"] for i in calibration.report.get("calibration_set", {}).get("images", [])]
    images = recorded or (read_images(calib_images) if calib_images else builtin_images())
    ids = np.concatenate([f["input_ids"] for f in calibration.feeds])
    mask = np.concatenate([f["attention_mask"] for f in calibration.feeds])
    feeds = GraphFeeds(loaded, ctx, padding, [], images, need_images=True, tokens=(ids, mask))
    calibration.report["calibration_images"] = [Path(p).name for p in images]
    return [{k: v[i : i + 1] for k, v in batch.items()} for batch in feeds.for_graph(name)
            for i in range(len(next(iter(batch.values()))))]


def _default_context(loaded: LoadedModel) -> int:
    from litetext.models.presets import STUDENT

    if loaded.family == STUDENT:
        return int(loaded.model.config.text_config.max_position_embeddings)
    return 32


class GraphFeeds:
    """Real feeds for each graph, for parity and for calibration: prompts through the tokenizer, images through
    the preprocessing, and for the heads the reference (PyTorch) vision and text features of those, so each
    graph is checked alone."""

    TEXT_BATCH = 8

    def __init__(self, loaded, ctx, padding, prompts, images, need_images: bool, tokens=None):
        from litetext.calibration.data import load_rgb, preprocess_image
        from litetext.tokenizer import ClipTokenizer

        self.loaded, self.ctx, self.padding = loaded, ctx, padding
        if tokens is None:
            batch = ClipTokenizer()(prompts, context_length=ctx, pad_id=padding.pad_id)
            tokens = batch.input_ids, batch.attention_mask
        self.input_ids, self.attention_mask = tokens
        size = model_geometry(loaded).image_size
        rgbs = [load_rgb(p) for p in images] if need_images else []
        self.image_sizes = [rgb.shape[:2] for rgb in rgbs]
        self.pixels = [preprocess_image(rgb, size) for rgb in rgbs]
        self._references: dict = {}

    def text_batches(self) -> list[dict[str, np.ndarray]]:
        from litetext.tokenizer import text_feeds

        return text_feeds(self.input_ids, self.attention_mask, self.TEXT_BATCH)

    def for_graph(self, name: str) -> list[dict[str, np.ndarray]]:
        if name == "text_encoder":
            return self.text_batches()
        if name == "vision_encoder":
            return [{"pixel_values": p} for p in self.pixels]
        return self._heads_batches()

    def _heads_batches(self) -> list[dict[str, np.ndarray]]:
        """One batch per image: the image with two prompts (batch 2), features from the PyTorch graphs."""
        vision, text = self._reference("vision_encoder"), self._reference("text_encoder")
        batches = []
        for i, pixels in enumerate(self.pixels):
            pick = [(2 * i) % len(self.input_ids), (2 * i + 1) % len(self.input_ids)]
            text_feed = {"input_ids": self.input_ids[pick], "attention_mask": self.attention_mask[pick]}
            features = text.infer(text_feed)["text_features"]
            levels = {k: np.repeat(v, 2, axis=0) for k, v in vision.infer({"pixel_values": pixels}).items()}
            batches.append({**levels, "text_features": features, "attention_mask": text_feed["attention_mask"]})
        return batches

    def _reference(self, name: str):
        from litetext.runtimes.torch_runner import TorchRunner

        if name not in self._references:
            specs = describe_graphs(self.loaded, self.ctx, self.padding)
            graph = build_graph(name, self.loaded, self.ctx, self.padding)
            self._references[name] = TorchRunner(graph, specs[name])
        return self._references[name]

    def measure(self, name, reference, runner, batches) -> dict[str, dict]:
        """{"outputs": tensor parity per output} and, for the heads, {"instances": what an app would see at
        score 0.5}, the same layout as benchmark records."""
        from litetext.calibration.parity import instance_agreement, output_parity

        wants = [reference.infer(feed) for feed in batches]
        gots = [runner.infer(feed) for feed in batches]
        figures: dict[str, dict] = {"outputs": output_parity(wants, gots, batches)}
        if name == "heads":
            figures["instances"] = instance_agreement(wants, gots, self.image_sizes)
        return figures


def _example(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The feed to trace with: batch 2 where possible, so no size-1 batch is specialised into the graph."""
    first = batches[0]
    if len(next(iter(first.values()))) >= 2:
        return {k: v[:2] for k, v in first.items()}
    return {k: np.concatenate([v, v]) for k, v in first.items()}


def _fmt(fig: dict[str, float]) -> str:
    return (f"max error {fig['max_abs_error']:.3g} (reference max {fig['max_abs_reference']:.3g}), cosine mean "
            f"{fig['cosine_mean']:.6f}, worst 1% {fig['cosine_worst_1pct']:.6f}, min {fig['cosine_min']:.6f}")


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("litetext", "torch", "transformers", "onnx", "onnxruntime", "onnxslim", "coremltools", "tensorrt"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def image_encoder_record(model) -> dict[str, Any]:
    """Which image trunk a bundle's vision encoder runs, and whether it resizes its map to the ViT grid."""
    from litetext.models.efficientsam3 import describe_image_encoder

    return describe_image_encoder(model)


def _manifest(loaded, target, precision, ctx, padding, graphs, prompts, images, module) -> dict[str, Any]:
    g = model_geometry(loaded)
    config = loaded.model.config
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "precision": precision,
        "context_length": ctx,
        "text_padding": asdict(padding),
        "model": {
            "preset": loaded.preset,
            "family": loaded.family,
            "model_type": config.model_type,
            "weights": loaded.weights,
            "weights_label": loaded.weights_label,
            "image_encoder": image_encoder_record(loaded.model),
            "text_encoder": {
                "hidden_size": config.text_config.hidden_size,
                "num_hidden_layers": config.text_config.num_hidden_layers,
            },
        },
        "preprocess": {
            "image_size": g.image_size,
            "resize": "bilinear to image_size x image_size (aspect ratio not kept)",
            "rescale": 1 / 255,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "layout": "NCHW RGB float32",
        },
        "postprocess": {
            "score": "sigmoid(pred_logits) * sigmoid(presence_logits)",
            "threshold": 0.5,
            "mask_threshold": 0.5,
            "boxes": "pred_boxes xyxy in 0..1, times image width and height",
            "masks": "sigmoid(pred_masks), bilinear (align_corners=False) to the image size",
        },
        "tokenizer": {"file": TOKENIZER, "context_length": ctx, "pad_id": padding.pad_id,
                      "start_id": 49406, "end_id": 49407, "truncation": "keep the end token"},
        "graphs": graphs,
        "parity_data": {
            "prompts": len(prompts),
            "images": [Path(p).name for p in images] if any(n != "text_encoder" for n in graphs) else [],
        },
        "exporter": getattr(module, "EXPORTER", {"opset": getattr(module, "OPSET", None), "torch_onnx_dynamo": False}),
        "tools": tool_versions(),
    }
