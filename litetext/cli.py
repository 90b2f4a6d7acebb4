"""The `litetext` command: a thin shell over the Python API (litetext.load_model, export_bundle, predict)."""

from __future__ import annotations

import logging
import time

import click

from litetext.cli_format import (DerivedHelpOption, LitetextGroup, calibration_images_help,
                                  calibration_prompts_help, precision_help)
from litetext.cli_helpers import friendly_errors, split_list


def _progress():
    start = time.perf_counter()
    return lambda message: click.echo(f"[{time.perf_counter() - start:7.1f}s] {message}", err=True)


@click.group(cls=LitetextGroup)
@click.version_option(package_name="litetext")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
def main(verbose: bool) -> None:
    """Export SAM3 and SAM3-LiteText to on-device runtimes, and check what the artifacts do."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")


def model_options(command):
    options = [
        click.option("--model", "preset", metavar="PRESET",
                     help="sam3, litetext-s0, litetext-s1, litetext-l, efficientsam3-{ev,rv,tv}-m or "
                          "efficientsam3-TRUNK-{s0,s1,l,sam3} (names an upstream .pt's architecture)."),
        click.option("--checkpoint", type=click.Path(), help="transformers folder or upstream .pt checkpoint."),
        click.option("--random-init", is_flag=True, help="Seeded RANDOM weights (no checkpoint needed)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init."),
        click.option("--init", type=click.Choice(["stress", "transformers"]), default="stress", show_default=True,
                     help="--random-init weights: stress (every layer matters: layer scales, norms, BatchNorm "
                          "statistics and biases drawn away from identity) or transformers (the library's own)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@model_options
@click.option("--target", default="onnx", show_default=True, help="onnx, tensorrt, coreml or litert.")
@click.option("--tensorrt-version", "tensorrt_versions", multiple=True,
              help="tensorrt target: recipes for 10, 11 (default: both).")
@click.option("--deployment-target", type=click.Choice(["iOS17", "iOS18", "macOS14", "macOS15"]), default="iOS17",
              show_default=True, help="coreml target: minimum OS (w4 needs iOS18 or macOS15).")
@click.option("--compute-units", type=click.Choice(["ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"]), default="ALL",
              show_default=True, help="coreml target: compute units the package records and macOS runs it with.")
@click.option("--batch-sizes", default="1,2,4,8", show_default=True,
              help="coreml target: enumerated batch sizes (vision encoder and heads: the smallest).")
@click.option("--text-input", type=click.Choice(["ids", "embeddings"]), default="ids", show_default=True,
              help="litert target: the text encoder takes token ids, or embeddings looked up by the app in the "
                   "table shipped beside it (students).")
@click.option("--graphs", multiple=True, help="Comma-separated: text_encoder,vision_encoder,heads (default: all).")
@click.option("--context-length", type=int, help="Tokens per prompt (16 or 32; default: the model's).")
@click.option("--precision", default="fp32", show_default=True, cls=DerivedHelpOption, derive_help=precision_help)
@click.option("--text-padding", default="upstream", show_default=True,
              help="upstream (pad 0, no attention mask: how the students were trained) or transformers "
                   "(pad 49407, masked).")
@click.option("--heads-semantics", type=click.Choice(["upstream", "transformers"]),
              help="upstream (the empty-prompt geometry token, text valid where id != 0: how upstream's weights "
                   "were trained) or transformers (neither). Default: by the weights' origin (upstream .pt and "
                   "random weights: upstream; a transformers folder: transformers).")
@click.option("--parity-prompts", multiple=True, type=click.Path(),
              help="Prompt files or folders to check parity on (default: the 80 COCO names).")
@click.option("--parity-images", multiple=True, type=click.Path(),
              help="Images or folders to check parity on (default: two built-in photos).")
@click.option("--calib-prompts", multiple=True, type=click.Path(), cls=DerivedHelpOption,
              derive_help=calibration_prompts_help)
@click.option("--calib-images", multiple=True, type=click.Path(), cls=DerivedHelpOption,
              derive_help=calibration_images_help)
@click.option("--calib-set", type=click.Path(), help="INT8: a set saved by litetext calibrate (instead of --calib-prompts).")
@click.option("--calib-method", default="minmax", show_default=True, help="INT8: minmax, entropy or percentile.")
@click.option("--min-cosine-mean", type=float, help="INT8: lower the gate on mean cosine (default 0.995).")
@click.option("--min-cosine-worst-1pct", type=float, help="INT8: lower the gate on the worst 1% (default 0.98).")
@click.option("--vocabulary", "vocabulary_files", multiple=True, type=click.Path(),
              help="Prompt files or folders: store their text features instead of a text_encoder graph.")
@click.option("--vocabulary-precision", default="fp16", show_default=True, help="fp16 or int8 (--vocabulary).")
@click.option("--prune-vocabulary", "prune_files", multiple=True, type=click.Path(),
              help="Prompt files or folders (a corpus): keep only the token-table rows they need in the student's "
                   "text encoder; tokenizer.json gets the pruned vocabulary (docs/vocabulary.md).")
@click.option("-o", "--out", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--force", is_flag=True, help="Replace OUT if it is an existing bundle.")
@friendly_errors
def export(preset, checkpoint, random_init, seed, init, target, tensorrt_versions, deployment_target, compute_units,
           batch_sizes, text_input, graphs, context_length, precision,
           text_padding, heads_semantics, parity_prompts, parity_images, calib_prompts, calib_images, calib_set,
           calib_method, min_cosine_mean, min_cosine_worst_1pct, vocabulary_files, vocabulary_precision, prune_files, out,
           force):
    """Export graphs to a bundle, checked against PyTorch on real prompts and images."""
    from litetext.calibration.data import read_prompts
    from litetext.cli_checks import check_export
    from litetext.export import export_bundle, target_module
    from litetext.export.writer import BundleWriter
    from litetext.models.graphs import check_graph_names
    from litetext.models.loading import load_model

    check_export(preset, checkpoint, target, tensorrt_versions, deployment_target, compute_units, batch_sizes, graphs,
                 context_length, precision, text_padding, parity_prompts, parity_images, calib_prompts, calib_images,
                 calib_set, calib_method, min_cosine_mean, min_cosine_worst_1pct, vocabulary_files,
                 vocabulary_precision, prune_files, seed, out, force)  # every problem at once, before any work
    module = target_module(target)  # an unknown target fails before the model loads
    options = None
    if target == "tensorrt" and tensorrt_versions:
        options = {"tensorrt_versions": [int(v) for v in split_list(tensorrt_versions)]}
    if target == "coreml":
        options = {"deployment_target": deployment_target, "compute_units": compute_units,
                   "batch_sizes": [int(b) for b in split_list((batch_sizes,))]}
        module.check_options(precision, **options)  # so does a w4 for iOS17
    if target == "litert":
        options = {"text_input": text_input}
    BundleWriter(out, force)  # so does an existing OUT
    chosen_graphs = split_list(graphs) or None
    check_graph_names(chosen_graphs or [])  # and a typo in a graph name, before any model is built
    progress = _progress()
    # A text-only export builds and loads only the text encoder (a fixed vocabulary needs the whole model).
    loaded = load_model(preset, checkpoint, random_init, seed, context_length, init=init,
                        graphs=None if vocabulary_files else chosen_graphs)
    prompts = read_prompts(list(parity_prompts)) if parity_prompts else None
    from litetext.calibration.sets import CalibrationSet

    calibration = read_prompts(list(calib_prompts)) if calib_prompts else None
    saved_set = CalibrationSet.load(calib_set) if calib_set else None
    gate = {k: v for k, v in [("min_cosine_mean", min_cosine_mean),
                              ("min_cosine_worst_1pct", min_cosine_worst_1pct)] if v is not None}
    manifest = export_bundle(
        loaded, out, target=target, graphs=chosen_graphs, context_length=context_length,
        precision=precision, text_padding=text_padding, heads_semantics=heads_semantics, parity_prompts=prompts,
        parity_images=list(parity_images) or None, calib_prompts=calibration, calib_set=saved_set, calib_images=list(calib_images) or None,
        calib_method=calib_method,
        vocabulary=read_prompts(list(vocabulary_files)) if vocabulary_files else None,
        vocabulary_precision=vocabulary_precision,
        prune_vocabulary=read_prompts(list(prune_files)) if prune_files else None,
        gate=gate or None, force=force, progress=progress,
        target_options=options,
    )
    for name, graph in manifest["graphs"].items():
        worst = min(p["cosine_min"] for p in graph["parity"]["outputs"].values())
        err = max(p["max_abs_error"] for p in graph["parity"]["outputs"].values())
        line = f"{name:15s} {graph['bytes'] / 2**20:9.1f} MiB   max error {err:.2e}   min cosine {worst:.6f}"
        gate = graph["tolerance"][precision]
        if gate["min_cosine_mean"] or gate["min_cosine_worst_1pct"]:  # what gates a quantized graph
            figures = graph["parity"]["outputs"].values()
            line += (f"   cosine mean {min(p['cosine_mean'] for p in figures):.5f} (gate {gate['min_cosine_mean']}),"
                     f" worst 1% {min(p['cosine_worst_1pct'] for p in figures):.5f} "
                     f"(gate {gate['min_cosine_worst_1pct']})")
        click.echo(line)
    text_path = manifest.get("text_path") or {}
    if text_path.get("kind") == "pruned_text_encoder":
        covered, rest, params = text_path["parity_prompts"], text_path["uncovered_parity"], text_path["parameters"]
        click.echo(f"pruned: {text_path['kept_tokens']} of {text_path['vocabulary_size']} tokens, parameters "
                   f"{params['before'] / 1e6:.2f}M -> {params['after'] / 1e6:.2f}M ({params['ratio']:.3f}x); "
                   f"{covered['covered']} of {covered['prompts']} parity prompts covered (max error above)"
                   + (f", the others pooled cosine mean {rest['pooled_cosine_mean']:.4f}" if rest["prompts"] else ""))
    if loaded.is_random:
        click.secho(f"NOTE: {loaded.weights_label}", fg="yellow", err=True)


@main.command()
@click.option("--prompts", multiple=True, required=True, type=click.Path(), help="Prompt files or folders.")
@click.option("--images", multiple=True, type=click.Path(), help="Images or folders (recorded with their sha256).")
@click.option("--context-length", type=int, default=16, show_default=True)
@click.option("--text-padding", default="upstream", show_default=True, help="upstream or transformers.")
@click.option("--count", type=int, default=256, show_default=True, help="Prompts to draw, evenly across lengths.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", required=True, type=click.Path(), help="The .npz file to write.")
@friendly_errors
def calibrate(prompts, images, context_length, text_padding, count, seed, out):
    """Save a calibration set once, to reuse for INT8 on every target and in benchmarks."""
    from litetext.calibration.data import read_images, read_prompts
    from litetext.calibration.sets import build_calibration_set
    from litetext.cli_checks import check_calibrate
    from litetext.models.graphs import get_padding

    check_calibrate(prompts, images, context_length, text_padding, count, seed, out)
    padding = get_padding(text_padding)
    chosen = build_calibration_set(read_prompts(list(prompts)), context_length, padding.pad_id,
                                   read_images(list(images)) if images else [], count, seed)
    chosen.save(out)
    summary = chosen.summary()
    click.echo(f"{summary['prompts']} of {summary['drawn_from']} prompts, context {context_length}, "
               f"{len(summary['images'])} images -> {out} (sha256 {summary['content_hash'][:12]})")


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--image", "images", multiple=True, required=True, type=click.Path(),
              help="Image file or folder of images (repeat for more).")
@click.option("--prompt", "prompts", multiple=True, help="Text prompt naming a concept to segment (repeat for more).")
@click.option("--prompts", "prompt_files", multiple=True, type=click.Path(),
              help="Prompt file (one a line) or folder of them (repeat for more).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Score threshold.")
@click.option("-o", "--out", required=True, type=click.Path(),
              help="Folder: one sub-folder per image with instances.json, masks and overlay.png.")
@click.option("--verify", is_flag=True, help="Check the sha256 of every file of BUNDLE first.")
@friendly_errors
def predict(bundle, images, prompts, prompt_files, threshold, out, verify):
    """Segment every instance of each prompt in each image with an exported bundle (ONNX Runtime): the vision
    encoder runs once per image, the text encoder once per prompt, the heads once per image for all prompts."""
    from pathlib import Path

    from litetext.bundle import Bundle
    from litetext.calibration.data import read_images, read_prompts
    from litetext.cli_checks import check_predict
    from litetext.errors import LitetextError
    from litetext.files import replaced_folder
    from litetext.predict import Predictor
    from litetext.predict_many import image_folders, is_prediction_folder, predict_images, write_image_predictions

    check_predict(bundle, images, prompt_files, threshold, out)
    asked = list(dict.fromkeys([*prompts, *(read_prompts(list(prompt_files)) if prompt_files else [])]))
    if not asked:
        raise LitetextError("name what to segment: --prompt TEXT (repeatable) or --prompts FILE")
    paths = read_images(list(images))
    opened = Bundle.open(bundle, verify=verify)
    predictor = Predictor(opened)
    label = opened.manifest["model"]["weights_label"]
    folders = image_folders(paths)
    # A fresh folder replaces OUT whole: no mask of an earlier prediction stays, an interrupted run leaves OUT.
    with replaced_folder(out, is_prediction_folder) as tmp:
        for folder, (path, rgb, found) in zip(folders, predict_images(predictor, paths, asked, threshold)):
            write_image_predictions(found, path, rgb, tmp / folder, label, threshold)
            click.echo(f"{path}: -> {Path(out) / folder}")
            for prompt, instances in found.items():
                click.echo(f"  {len(instances)} instances of {prompt!r} above {threshold}")
                for inst in instances:
                    click.echo(f"    score {inst.score:.3f}  box {[round(v, 1) for v in inst.box]}  "
                               f"area {int(inst.mask.sum())}")
    if opened.manifest["model"]["weights"]["kind"] == "random":
        click.secho(f"NOTE: {label}", fg="yellow", err=True)


def _register_commands() -> None:
    """Commands defined beside the parts they drive."""
    from litetext.analysis.cli import analyze
    from litetext.benchmarks.cli import bench
    from litetext.distill.cli import distill
    from litetext.fixture.cli import train_fixture
    from litetext.fixture.demo import demo
    from litetext.info_cli import info
    from litetext.tensorrt_cli import build_engine, check

    for command in (bench, check, build_engine, analyze, distill, info, train_fixture, demo):
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()
