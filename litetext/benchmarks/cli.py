"""`litetext bench`: latency, memory and parity of bundles and eager PyTorch, as JSON records and a report.

Registered on the main command group with `main.add_command(bench)`.
"""

from __future__ import annotations

import shlex
import sys
import time

import click

from litetext.cli_helpers import friendly_errors, split_list
from litetext.errors import LitetextError


def parse_batches(text: str, option: str = "--batch") -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise LitetextError(f"{option} takes comma-separated positive integers such as 1,8, not {text!r}") from None
    if not batches or min(batches) < 1:
        raise LitetextError(f"{option} takes comma-separated positive integers such as 1,8, not {text!r}")
    return batches


def _command_line(ctx: click.Context) -> str:
    parts = ["litetext", "bench", *ctx.params["targets"]]
    for name, value in ctx.params.items():
        default = next((p.default for p in ctx.command.params if p.name == name), None)
        if name == "targets" or value is None or value is False or value == () or value == default:
            continue
        flag = "--" + name.replace("_", "-").replace("json-path", "json").replace("report-dir", "report")
        for v in value if isinstance(value, tuple) else [value]:
            parts += [flag] if v is True else [flag, str(v)]
    return " ".join(shlex.quote(p) for p in parts)


@click.command("bench")
@click.argument("targets", nargs=-1, metavar="TARGET...")
@click.option("--graphs", multiple=True, help="text_encoder, vision_encoder, heads, pipeline (default: each target's "
              "graphs, all three for torch targets, and pipeline when a target has all three).")
@click.option("--pipeline-prompts", default="1,8", show_default=True,
              help="Whole-pipeline rows: prompts per image, comma-separated (one image each time).")
@click.option("--heads-batch", type=int, help="Whole-pipeline rows: prompts per heads call (default: as litetext "
              "predict, one; always one for Core ML).")
@click.option("--prompts", multiple=True, type=click.Path(), help="Prompt files or folders (default: the 80 COCO names).")
@click.option("--images", multiple=True, type=click.Path(), help="Images or folders (default: two built-in photos).")
@click.option("--batch", "batch", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of torch:PRESET random weights.")
@click.option("--reference", metavar="TARGET",
              help="Compare every target against this one (default: eager PyTorch of each bundle's own weights).")
@click.option("--context-length", type=int, help="Tokens per prompt for torch targets (default: the model's).")
@click.option("--text-padding", default="upstream", show_default=True, help="Padding for torch targets.")
@click.option("--threads", type=int, help="Intra-op threads for torch and ONNX Runtime (default: theirs).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Score threshold for heads instances.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs first.")
@click.option("--min-runs", type=int, default=20, show_default=True, help="Timed runs, at least.")
@click.option("--min-seconds", type=float, default=2.0, show_default=True, help="Seconds of timed runs, at least.")
@click.option("--max-seconds", type=float, default=60.0, show_default=True,
              help="Stop timing after this long even below --min-runs (the record says so).")
@click.option("--no-memory", is_flag=True, help="Skip the fresh-process memory probes.")
@click.option("--verify", is_flag=True, help="Check the sha256 of every file of each bundle first.")
@click.option("--json", "json_path", type=click.Path(), help="Write the records to this JSON file.")
@click.option("--report", "report_dir", type=click.Path(), help="Write report.md and plots to this folder.")
@click.option("--merge", is_flag=True,
              help="The arguments are result JSON files (from several devices) to join, deduplicated, into --json.")
@click.pass_context
@friendly_errors
def bench(ctx, targets, graphs, pipeline_prompts, heads_batch, prompts, images, batch, seed, reference, context_length, text_padding, threads,
          threshold, warmup, min_runs, min_seconds, max_seconds, no_memory, verify, json_path, report_dir, merge):
    """Benchmark TARGETs: exported bundle folders, torch:PRESET (random weights, --seed), torch:CHECKPOINT or
    torch:PRESET:UPSTREAM.pt. Measures latency (p50/p90/p99), weights and load memory (fresh process) and
    parity against eager PyTorch of the same weights, on real prompts and images.

    \b
      litetext bench out/s0 out/s0-fp16 torch:litetext-s0 --graphs text_encoder --batch 1,8 \\
          --json results.json --report report/
      litetext bench --merge laptop.json jetson.json --json all.json --report all/
    """
    from litetext.benchmarks.report import pipeline_table, results_table, write_report
    from litetext.benchmarks.results import merge_files, write_results
    from litetext.cli_checks import check_bench

    check_bench(targets, merge, graphs, prompts, images, batch, threads, threshold, warmup, min_runs, min_seconds,
                max_seconds, context_length, text_padding, json_path, report_dir, pipeline_prompts)  # before the run
    if merge:
        records = merge_files(list(targets))
        click.echo(f"merged {len(records)} records from {len(targets)} files", err=True)
    else:
        records = _run(ctx, targets, graphs, prompts, images, batch, seed, reference, context_length, text_padding,
                       threads, threshold, warmup, min_runs, min_seconds, max_seconds, no_memory, verify,
                       pipeline_prompts=parse_batches(pipeline_prompts, "--pipeline-prompts"), heads_batch=heads_batch)
    if json_path:
        write_results(records, json_path, command=_command_line(ctx),
                      sources=[str(t) for t in targets] if merge else None)
        click.echo(f"wrote {json_path}", err=True)
    if report_dir:
        paths = write_report(records, report_dir)
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=True)
    click.echo(results_table(records))
    if pipeline_table(records):
        click.echo("\nWhole pipeline (1 image + N prompts; split per graph, medians):\n" + pipeline_table(records))
    failed = [r for r in records if r.get("status") != "ok"]
    if any((r.get("model") or {}).get("random") for r in records):
        click.secho("NOTE: RANDOM weights in some records: latency and memory are real, outputs mean nothing",
                    fg="yellow", err=True)
    if failed:  # the records are written, but a script running bench must see that some failed
        click.secho(f"{len(failed)} of {len(records)} records failed: {failed[0].get('error')}", fg="red", err=True)
        sys.exit(1)


def _run(ctx, targets, graphs, prompts, images, batch, seed, reference, context_length, text_padding, threads,
         threshold, warmup, min_runs, min_seconds, max_seconds, no_memory, verify=False, pipeline_prompts=(1, 8),
         heads_batch=None):
    from litetext.benchmarks.pipeline import GRAPH as PIPELINE
    from litetext.benchmarks.run import run_bench
    from litetext.benchmarks.stats import TimingOptions
    from litetext.benchmarks.targets import open_target
    from litetext.calibration.data import read_images, read_prompts
    from litetext.models.graphs import GRAPH_NAMES, get_padding

    batches = parse_batches(batch)
    graph_list = split_list(graphs) or None
    unknown = [g for g in graph_list or [] if g not in (*GRAPH_NAMES, PIPELINE)]
    if unknown:
        raise LitetextError(f"unknown graphs {unknown}; choose from: {', '.join((*GRAPH_NAMES, PIPELINE))}")
    get_padding(text_padding)
    if min(warmup, min_runs) < 0 or min_runs < 1 or max_seconds <= 0:
        raise LitetextError("--min-runs must be at least 1, --warmup at least 0 and --max-seconds positive")
    if threads:
        import torch

        torch.set_num_threads(threads)
    opened = [open_target(t, seed, context_length, text_padding, threads, verify) for t in targets]
    ref = open_target(reference, seed, context_length, text_padding, threads, verify) if reference else None
    prompt_list = read_prompts(list(prompts)) if prompts else None
    image_list = read_images(list(images)) if images else None
    start = time.perf_counter()
    progress = lambda message: click.echo(f"[{time.perf_counter() - start:7.1f}s] {message}", err=True)  # noqa: E731
    timing = TimingOptions(warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                           max_seconds=max(max_seconds, min_seconds))
    return run_bench(opened, graph_list, batches, prompt_list, image_list, ref, timing, memory=not no_memory,
                     threshold=threshold, progress=progress, command=_command_line(ctx),
                     pipeline_prompts=pipeline_prompts, heads_batch=heads_batch)
