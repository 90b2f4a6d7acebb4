"""Export a loaded model into a bundle for one target, checking every graph against PyTorch.

    loaded = litetext.load_model("litetext-s0", random_init=True, seed=0)
    manifest = litetext.export_bundle(loaded, "out/s0", target="onnx", graphs=["text_encoder"])

`export_bundle` is a short sequence of named steps over one `ExportPlan`: plan what to make (and fail before any
work on what cannot be made), build the parity references, then for each graph calibrate, export, check and
describe it, and finally write the text path and the manifest. Data flows down: each step calls the layers
below it (models, calibration, runtimes, the target module) and returns what the next step needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from litetext.bundle import MANIFEST, TOKENIZER
from litetext.calibration.feeds import GraphFeeds, RealInputs, graph_parity
from litetext.errors import LitetextError
from litetext.export.manifest import build_manifest, format_parity
from litetext.export.targets import target_module
from litetext.export.writer import BundleWriter
from litetext.export.bundle_readme import README, bundle_readme
from litetext.files import sha256_of, write_bytes_atomic, write_json_atomic
from litetext.models.graphs import (GRAPH_NAMES, GraphSpec, TextPadding, Tolerance, build_graph,
                                    describe_graphs, get_padding, model_geometry)
from litetext.models.loading import LoadedModel

TEXT_BATCH = 8  # parity prompts per text-encoder feed
CONTEXT_LENGTHS = (16, 32)  # every preset's (litetext.models.presets)
HEADS_PROMPTS = 2  # parity prompts per image for the heads (batch 2: no size-1 batch specialised into the graph)


@dataclass
class ExportPlan:
    """What one export makes, decided and checked before any model work."""

    loaded: LoadedModel
    target: str
    module: Any  # the target's module (litetext.export.targets)
    precision: str
    graphs: list[str]
    context_length: int
    padding: TextPadding
    specs: dict[str, GraphSpec]
    tolerances: dict[str, Tolerance]
    prompts: list[str]
    images: list[str | Path]
    calibration_options: dict[str, Any]
    target_options: dict[str, Any]
    pruning: Any = None  # litetext.vocabulary.build.PrunedParity, or None
    inputs: RealInputs | None = None  # parity inputs
    references: dict[str, Any] = field(default_factory=dict)  # graph -> eager PyTorch runner


def export_bundle(
    loaded: LoadedModel,
    out: str | Path,
    target: str = "onnx",
    graphs: list[str] | None = None,
    context_length: int | None = None,
    precision: str = "fp32",
    text_padding: str = "upstream",
    heads_semantics: str | None = None,
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
    needs in a student's text encoder, with a tokenizer.json of NEW ids; see litetext.vocabulary.
    `heads_semantics` ("upstream" or "transformers") overrides the one the weights' origin chooses
    (litetext.models.heads_semantics)."""
    if heads_semantics is not None:
        from litetext.models.heads_semantics import get_heads_semantics

        loaded = replace(loaded, heads_semantics=get_heads_semantics(heads_semantics).name)
    plan = plan_export(loaded, target, graphs, context_length, precision, text_padding, parity_prompts,
                       parity_images, gate, target_options, vocabulary,
                       dict(prompts=calib_prompts, set=calib_set, images=calib_images, method=calib_method))
    writer = BundleWriter(out, force)  # fails now, before any work, if OUT exists without --force
    plan.pruning = plan_pruning(plan, vocabulary, prune_vocabulary, progress)
    progress(f"weights: {loaded.weights_label}")
    started = time.perf_counter()
    plan.inputs = RealInputs(plan.prompts, plan.images)
    with writer as tmp:
        described = {name: export_graph(plan, name, tmp, progress) for name in plan.graphs}
        text_path = write_text_path(plan, tmp, vocabulary, vocabulary_precision, prune_vocabulary, described, progress)
        manifest = build_manifest(plan, described, text_path)
        manifest["tokenizer"]["sha256"] = sha256_of(tmp / manifest["tokenizer"]["file"])  # checked by Bundle.open
        manifest["export_seconds"] = round(time.perf_counter() - started, 2)
        write_json_atomic(tmp / MANIFEST, manifest)
        write_bytes_atomic(tmp / README, bundle_readme(manifest).encode())  # the app developer's guide
    progress(f"wrote {Path(out)}")
    return manifest


def plan_export(loaded, target, graphs, context_length, precision, text_padding, parity_prompts, parity_images,
                gate, target_options, vocabulary, calibration_options) -> ExportPlan:
    """Check the target, precision, graphs and padding, and settle every graph's description and gate."""
    from litetext.calibration.data import builtin_images, builtin_prompts, read_images

    module = target_module(target)
    if precision not in module.PRECISIONS:
        raise LitetextError(f"the {target} target exports {', '.join(module.PRECISIONS)}, not {precision!r}")
    from litetext.models.upstream_files import available_graphs, check_graph_available

    graphs = list(graphs or available_graphs(loaded, GRAPH_NAMES))
    if vocabulary is not None:  # stored features replace the text encoder
        graphs = [g for g in graphs if g != "text_encoder"]
    unknown = [g for g in graphs if g not in GRAPH_NAMES]
    if unknown:
        raise LitetextError(f"unknown graphs {unknown}; choose from: {', '.join(GRAPH_NAMES)}")
    for name in graphs:  # a stage-1 file holds the text encoder alone: say so first
        check_graph_available(loaded, name)
    if loaded.text_only and graphs != ["text_encoder"]:
        raise LitetextError(f"the model was loaded for the text encoder only, not {', '.join(graphs)}; load it with "
                            "load_model(..., graphs=None) (the whole model)")
    padding = get_padding(text_padding)
    if context_length is not None and context_length not in CONTEXT_LENGTHS:
        raise LitetextError(f"context_length takes {' or '.join(map(str, CONTEXT_LENGTHS))}, not {context_length}")
    ctx = context_length or _default_context(loaded)
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
    images = read_images(parity_images) if parity_images else builtin_images()
    return ExportPlan(loaded, target, module, precision, graphs, ctx, padding, specs, tolerances,
                      parity_prompts or builtin_prompts(), images, calibration_options, dict(target_options or {}))


def plan_pruning(plan: ExportPlan, vocabulary, corpus, progress):
    """The pruned vocabulary of `corpus` and the parity prompts tokenized for it (PrunedParity), or None without
    a corpus. Fails, before any export, where pruning does not apply."""
    from litetext.models.presets import STUDENT
    from litetext.tokenizer import VOCAB_SIZE
    from litetext.vocabulary.build import PrunedParity, prune_vocabulary

    if corpus is None:
        return None
    if vocabulary is not None:
        raise LitetextError("--prune-vocabulary prunes the text encoder's token table, and --vocabulary replaces the "
                            "text encoder by stored features: choose one")
    if "text_encoder" not in plan.graphs:
        raise LitetextError("--prune-vocabulary prunes the text_encoder graph; add text_encoder to --graphs")
    if plan.loaded.family != STUDENT:
        raise LitetextError(f"--prune-vocabulary applies to the LiteText students' text encoders, not "
                            f"{plan.loaded.preset} (the teacher's CLIP text encoder); export a litetext-s0, -s1 or -l model")
    if not corpus:
        raise LitetextError("--prune-vocabulary needs a corpus of prompts; none were given")
    pruning = PrunedParity(prune_vocabulary(corpus), plan.prompts, plan.context_length, plan.padding)
    progress(f"pruned vocabulary: {len(pruning.vocabulary)} of {VOCAB_SIZE} tokens kept for {len(corpus)} corpus "
             f"prompts; {int(pruning.covered.sum())} of {len(plan.prompts)} parity prompts covered")
    return pruning


def reference(plan: ExportPlan, name: str):
    """The eager PyTorch fp32 graph every artifact is checked against (built once per export)."""
    from litetext.runtimes.torch_runner import TorchRunner

    if name not in plan.references:
        graph = build_graph(name, plan.loaded, plan.context_length, plan.padding)
        plan.references[name] = TorchRunner(graph, plan.specs[name])
    return plan.references[name]


def parity_feeds(plan: ExportPlan, name: str) -> GraphFeeds:
    """Real parity feeds: the prompts in batches of TEXT_BATCH; each image alone; each image with two prompts
    through the PyTorch text and vision graphs, so the heads are checked alone."""
    inputs, size = plan.inputs, model_geometry(plan.loaded).image_size
    if name == "text_encoder":
        return inputs.text(plan.context_length, plan.padding, TEXT_BATCH, wrap=False)
    if name == "vision_encoder":
        return inputs.vision(size, 1)
    from litetext.models.heads_semantics import heads_semantics_of

    return inputs.heads(plan.context_length, plan.padding, size, HEADS_PROMPTS, reference(plan, "text_encoder"),
                        reference(plan, "vision_encoder"), heads_semantics_of(plan.loaded))


def calibrate(plan: ExportPlan, name: str):
    """The Int8Calibration an INT8 (or calibrated Core ML) graph needs, else None."""
    from litetext.calibration.prepare import image_calibration_feeds, int8_calibration

    if not (plan.precision == "int8" or plan.precision in getattr(plan.module, "CALIBRATED_PRECISIONS", ())):
        return None
    options = plan.calibration_options
    pruned = plan.pruning if name == "text_encoder" else None
    calibration = int8_calibration(plan.context_length, plan.padding, options["prompts"], options["set"],
                                   options["method"], pruned.tokenizer if pruned else None)
    if name != "text_encoder":
        calibration.feeds = image_calibration_feeds(name, plan.loaded, plan.context_length, plan.padding, calibration,
                                                    options["images"], model_geometry(plan.loaded).image_size)
        # These gates are looser than the text encoder's: search only as far as they ask.
        calibration.target_cosine_mean = plan.tolerances[name].min_cosine_mean
        calibration.target_cosine_worst_1pct = plan.tolerances[name].min_cosine_worst_1pct
    return calibration


def export_graph(plan: ExportPlan, name: str, folder: Path, progress) -> dict[str, Any]:
    """Export one graph into `folder`, check it against PyTorch and return its manifest entry."""
    module, spec, pruned = plan.module, plan.specs[name], (plan.pruning if name == "text_encoder" else None)
    graph = build_graph(name, plan.loaded, plan.context_length, plan.padding,
                        pruned.vocabulary.kept_ids if pruned else None)
    feeds = None if pruned else parity_feeds(plan, name)
    batches = pruned.batches() if pruned else feeds.feeds
    path = folder / f"{name}{module.FILE_SUFFIX}"
    progress(f"{name}: exporting to {plan.target} {plan.precision}")
    t0 = time.perf_counter()
    calibration = calibrate(plan, name)
    options = dict(plan.target_options)
    if hasattr(module, "write_metadata"):  # targets that describe their artifacts (coreml)
        options.setdefault("metadata", {"weights": plan.loaded.weights_label})
    module.export_graph(graph, spec, _example(batches), path, plan.precision, calibration, **options)
    export_s = time.perf_counter() - t0
    progress(f"{name}: checking parity on {sum(len(next(iter(b.values()))) for b in batches)} real samples")
    parity = check_parity(plan, name, graph, path, calibration, feeds)
    if hasattr(module, "write_metadata"):  # parity into the artifact too, before it is hashed
        module.write_metadata(path, {"parity": parity["outputs"], "parity_runtime": module.parity_runtime()})
    files = module.files_of(path)
    if pruned:  # coverage and the uncovered prompts' figures go to text_path
        parity = {"reference": "torch eager fp32, same weights, unpruned, on CLIP's ids",
                  "prompts": "the covered parity prompts (every token kept); the others: text_path",
                  "outputs": parity["outputs"]}
    entry = {
        "file": path.name,
        **spec.to_json(),
        "bytes": sum(f.stat().st_size for f in files),
        "sha256": sha256_of(path),
        "parity": {"reference": "torch eager fp32, same weights", **parity},
        "tolerance": {plan.precision: asdict(plan.tolerances[name])},
        "export_seconds": round(export_s, 2),
    }
    if calibration is not None:
        entry["calibration"] = calibration.report
    if hasattr(module, "graph_manifest"):  # target facts: recipes, caches, which runtime measured parity
        entry.update(module.graph_manifest(path, spec, plan.precision))
    progress(f"{name}: ok ({entry['bytes'] / 2**20:.1f} MiB, {export_s:.1f} s)")
    return entry


def check_parity(plan: ExportPlan, name: str, graph, path: Path, calibration, feeds: GraphFeeds | None) -> dict:
    """Run the artifact on the parity feeds against eager PyTorch; raise past the graph's tolerance."""
    from litetext.calibration.parity import instances_agree, passes
    from litetext.runtimes.by_target import open_runner

    module, spec, pruned = plan.module, plan.specs[name], (plan.pruning if name == "text_encoder" else None)
    if hasattr(module, "simulated_runner") and not module.can_predict():
        # Core ML predicts on macOS only: elsewhere, the package's compression simulated in PyTorch
        runner = module.simulated_runner(graph, spec, plan.precision, calibration)
    else:
        runner = open_runner(plan.target, path, spec, plan.precision)
    if pruned:  # the reference is the unpruned graph, on CLIP's ids
        parity = pruned.measure(reference(plan, name), runner)
        runner.close()
    else:
        wants = [reference(plan, name).infer(f) for f in feeds.feeds]
        gots = [runner.infer(f) for f in feeds.feeds]
        runner.close()  # before comparing: the heads' runner holds gigabytes at 1008 px
        parity = graph_parity(name, wants, gots, feeds)
    tolerance = plan.tolerances[name]
    failed = [o for o, fig in parity["outputs"].items() if not passes(fig, tolerance)]
    if "instances" in parity and not instances_agree(parity["instances"]):
        failed.append("instances")
    if failed:
        details = "; ".join(f"instances: {parity[o]}" if o == "instances" else f"{o}: {format_parity(parity['outputs'][o])}"
                            for o in failed)
        raise LitetextError(f"{name} ({plan.target} {plan.precision}) is outside its tolerance {asdict(tolerance)}: "
                            f"{details}. Nothing was written")
    return parity


def write_text_path(plan: ExportPlan, folder: Path, vocabulary, vocabulary_precision, corpus, described,
                    progress) -> dict[str, Any] | None:
    """What gives the heads their text features: the text encoder with tokenizer.json, a fixed vocabulary, or a
    pruned text encoder with its own tokenizer.json. Returns the manifest's text_path entry."""
    from litetext.tokenizer import write_tokenizer_json

    text_path = {"kind": "text_encoder"} if "text_encoder" in plan.graphs else None
    if vocabulary is not None:
        from litetext.vocabulary.build import write_fixed_vocabulary

        progress(f"fixed vocabulary: {len(vocabulary)} prompts, {vocabulary_precision}")
        text_path = write_fixed_vocabulary(plan.loaded, folder, vocabulary, plan.context_length, plan.padding,
                                           vocabulary_precision)
    if plan.pruning is not None:
        from litetext.vocabulary.build import write_pruned_text_path

        text_path = write_pruned_text_path(folder, plan.pruning.vocabulary, corpus, plan.loaded, plan.context_length,
                                           plan.padding, plan.pruning.figures, described["text_encoder"]["bytes"])
    else:
        write_tokenizer_json(folder / TOKENIZER, context_length=plan.context_length, pad_id=plan.padding.pad_id)
    return text_path


def _default_context(loaded: LoadedModel) -> int:
    from litetext.models.presets import STUDENT

    if loaded.family == STUDENT:
        return int(loaded.model.config.text_config.max_position_embeddings)
    return 32


def _example(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The feed to trace with: batch 2 where possible, so no size-1 batch is specialised into the graph."""
    first = batches[0]
    if len(next(iter(first.values()))) >= 2:
        return {k: v[:2] for k, v in first.items()}
    return {k: np.concatenate([v, v]) for k, v in first.items()}
