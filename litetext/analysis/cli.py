"""`litetext analyze`: prompt anatomy as JSON, plots and a markdown report.

Registered on the main command group with `main.add_command(analyze)`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from litetext.cli_helpers import friendly_errors
from litetext.errors import LitetextError
from litetext.files import write_bytes_atomic


@click.command("analyze")
@click.argument("prompts", nargs=-1, type=click.Path(), metavar="PROMPTS...")
@click.option("--holdout", multiple=True, type=click.Path(),
              help="Held-out prompt files or folders: how well PROMPTS' vocabulary covers them.")
@click.option("--model", "preset", metavar="PRESET",
              help="Embedding geometry with this preset (sam3, litetext-s0, ...).")
@click.option("--checkpoint", type=click.Path(), help="Embedding geometry with this checkpoint.")
@click.option("--random-init", is_flag=True, help="Seeded RANDOM weights for --model.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init and the sample.")
@click.option("--sample", type=int, default=2000, show_default=True, help="Prompts embedded for the geometry.")
@click.option("--pooling", default="mean", show_default=True,
              help="mean (over valid tokens, start to end) or eot (the end token's feature).")
@click.option("--context-length", type=int, help="Context for the embeddings (default: 16 students, 32 teacher).")
@click.option("--json", "json_path", type=click.Path(), help="Write every figure to this JSON file.")
@click.option("--report", "report_dir", type=click.Path(), help="Write report.md and PNG plots to this folder.")
@friendly_errors
def analyze(prompts, holdout, preset, checkpoint, random_init, seed, sample, pooling, context_length, json_path,
            report_dir):
    """Token lengths, padding and truncation at contexts 8/16/32/77, vocabulary use and coverage of PROMPTS
    (files or folders of one prompt a line); with a model, the intrinsic dimension of its text embeddings.

    \b
      litetext analyze data/prompts/calib --holdout data/prompts/eval --json anatomy.json --report anatomy/
      litetext analyze data/prompts/calib --checkpoint ckpt/ --sample 2000 --report anatomy/
    """
    from litetext.analysis.core import analyze as run_analysis
    from litetext.analysis.report import PAPER, write_report

    if not prompts:
        raise LitetextError("give at least one prompt file or folder")
    if sample < 10:
        raise LitetextError(f"--sample must be at least 10, got {sample}")
    from litetext.cli_checks import Problems, output_file, output_folder

    outputs = Problems()  # unwritable outputs fail now, not after the analysis
    outputs.add(output_file(json_path, "--json"))
    outputs.add(output_folder(report_dir, "--report"))
    outputs.raise_any()
    from litetext.analysis.prompts import prompt_files

    prompt_files(list(prompts))  # missing files fail here, before anything loads
    if holdout:
        prompt_files(list(holdout))
    loaded = None
    if preset or checkpoint:
        from litetext.models.loading import load_model

        loaded = load_model(preset, checkpoint, random_init, seed, context_length if context_length in (16, 32)
                            else None, graphs=["text_encoder"])  # the text encoder alone
    elif random_init:
        raise LitetextError("--random-init needs --model PRESET")
    start = time.perf_counter()
    progress = lambda message: click.echo(f"[{time.perf_counter() - start:7.1f}s] {message}", err=True)  # noqa: E731
    result = run_analysis(list(prompts), list(holdout) or None, loaded, sample, seed, pooling, context_length,
                          progress=progress)

    o = result["overall"]
    click.echo(f"{o['prompts']:,} prompts: mean {o['lengths']['mean']:.2f} tokens, median {o['lengths']['median']:g}, "
               f"p95 {o['lengths']['p95']}, max {o['lengths']['max']} (start and end tokens counted)")
    click.echo("context  padding  truncated  density  | paper padding  truncated")
    for c, s in o["contexts"].items():
        p = PAPER["contexts"].get(c)
        paper = f"{100 * p['padding_waste']:13.1f}% {100 * p['truncated_share']:9.1f}%" if p else ""
        click.echo(f"{c:>7}  {100 * s['padding_waste']:6.1f}%  {100 * s['truncated_share']:8.2f}%  "
                   f"{100 * s['information_density']:6.1f}%  |{paper}")
    v = result["vocabulary"]
    click.echo(f"vocabulary: {v['distinct_tokens']:,} distinct tokens ({100 * v['vocabulary_share']:.1f}% of 49,408); "
               + ", ".join(f"{k} of occurrences in {n:,}" for k, n in v["tokens_for_coverage"].items()))
    if result["holdout"]:
        h = result["holdout"]
        click.echo(f"held-out coverage: {100 * h['occurrence_coverage']:.2f}% of token occurrences, "
                   f"{100 * h['prompts_fully_covered']:.2f}% of prompts fully covered")
    if result["geometry"]:
        g = result["geometry"]
        pca = g["pca"]["components_for"]
        click.echo(f"embeddings ({g['pooling']} pooling, {g['sample_used']} prompts): PCA {pca['90%']}/{pca['95%']}/"
                   f"{pca['99%']} components for 90/95/99% variance; TwoNN {g['intrinsic_dimension']['twonn']:.1f} "
                   f"(MLE {g['intrinsic_dimension']['twonn_mle']:.1f}) of {g['dimension']}")
        if g["random_weights"]:
            click.secho(f"NOTE: {loaded.weights_label}: the geometry describes an untrained network", fg="yellow",
                        err=True)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(json_path, (json.dumps(result, indent=1) + "\n").encode("utf-8"))
        click.echo(f"wrote {json_path}")
    if report_dir:
        write_report(result, report_dir)
        click.echo(f"wrote {report_dir}/report.md and plots")
