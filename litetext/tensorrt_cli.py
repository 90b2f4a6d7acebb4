"""`litetext check` and `litetext build-engine`: the TensorRT commands (registered on the main group with
main.add_command). `check` runs anywhere; `build-engine` needs TensorRT and a GPU (the device)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from litetext.cli_helpers import friendly_errors, split_list
from litetext.errors import LitetextError

VERSIONS = ("10", "11")


def _versions(values) -> tuple[int, ...]:
    chosen = split_list(values) or list(VERSIONS)
    bad = [v for v in chosen if v not in VERSIONS]
    if bad:
        raise LitetextError(f"--tensorrt-version takes {' or '.join(VERSIONS)}, not {', '.join(bad)}")
    return tuple(int(v) for v in chosen)


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--target", default="tensorrt", show_default=True, help="What to check the graphs for: tensorrt or litert.")
@click.option("--tensorrt-version", "versions", multiple=True, help="10, 11 (default: both).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the sha256 of every file the manifest lists.")
@friendly_errors
def check(bundle, target, versions, as_json, verify):
    """Check BUNDLE: the bundle's own checks (manifest, every file inside the folder and present, and with
    --verify, the default, the manifest's sha256 of each); for onnx and tensorrt bundles also, statically,
    operators TensorRT's parser lacks and misplaced or malformed Q/DQ (zero points, uint8, int32
    DequantizeLinear, weight axes), naming the nodes. Exit 1 when any error is found."""
    from litetext.bundle import Bundle
    from litetext.export.tensorrt.check import check_bundle, errors_of

    if target == "litert":
        return _check_litert(bundle, as_json)
    if target != "tensorrt":
        raise LitetextError(f"litetext check knows the tensorrt and litert targets, not {target!r}")
    chosen = _versions(versions)
    opened = Bundle.open(bundle, verify=verify)  # one line and exit 2 for a damaged or changed bundle
    made_for = opened.manifest.get("target")
    say = (lambda line: None) if as_json else click.echo  # --json prints only the JSON
    say(f"{bundle}: manifest and {len(opened.graphs)} graphs checked" + (" (files match their sha256)" if verify else ""))
    if made_for not in ("onnx", "tensorrt"):
        say(f"{bundle} is a {made_for} bundle: that is all litetext check checks for it (the TensorRT checks read "
            "ONNX graphs; litetext export --target tensorrt makes them)")
        if as_json:
            click.echo(json.dumps({}, indent=2))
        return
    precision = opened.manifest.get("precision")
    if made_for == "onnx":
        say(f"{bundle} was made for ONNX Runtime (--target onnx, {precision}); checking its graphs for TensorRT "
            f"{', '.join(map(str, chosen))}")
    results = check_bundle(bundle, chosen, verify=False)  # verified above
    errors = sum(len(errors_of(f)) for f in results.values())
    if as_json:
        click.echo(json.dumps({g: [f.to_json() for f in fs] for g, fs in results.items()}, indent=2))
    else:
        for graph, findings in results.items():
            counts = f"{len(errors_of(findings))} errors, {len(findings) - len(errors_of(findings))} warnings"
            click.echo(f"{graph}: {counts} (TensorRT {', '.join(map(str, chosen))})")
            for finding in findings:
                click.echo(f"  {finding}")
    if errors and made_for == "onnx":
        say(f"{errors} errors: this bundle was made for ONNX Runtime"
            + (" (its INT8 is ONNX Runtime's: uint8 activations, Q/DQ where ONNX Runtime fuses them)"
               if precision == "int8" else "")
            + f"; `litetext export --target tensorrt --precision {precision if precision != 'fp32' else 'fp16'}` "
              "exports for TensorRT")
    if errors:
        sys.exit(1)


def _check_litert(bundle, as_json):
    """LiteRT: each graph's XNNPACK fallbacks, measured in the interpreter, and the GPU delegate's limits."""
    from litetext.export.litert.delegates import check_bundle as check_litert, findings

    reports = check_litert(bundle)
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    failed = False
    for graph, report in reports.items():
        errors, warnings = findings(report)
        failed = failed or bool(errors)
        if not as_json:
            click.echo(f"{graph}: {len(errors)} errors, {len(warnings)} warnings (LiteRT delegates)")
            for line in [f"error: {e}" for e in errors] + [f"warning: {w}" for w in warnings]:
                click.echo(f"  {line}")
    if failed:
        sys.exit(1)


@click.command("build-engine")
@click.argument("bundle", type=click.Path())
@click.option("--graphs", multiple=True, help="Graphs to build (default: all of the bundle's).")
@click.option("--tensorrt-version", type=click.Choice(VERSIONS), help="Fail unless this TensorRT major is installed.")
@click.option("--dla-core", type=int, help="Build for this DLA core (Orin), with GPU fallback and a fixed batch.")
@click.option("--implicit-int8", is_flag=True,
              help="TensorRT <= 10: strip the Q/DQ and build INT8 from the bundle's calibration cache (DLA needs it).")
@click.option("--batch", "batch", nargs=3, type=int, help="min opt max batch of the optimization profile.")
@click.option("--timing-cache", type=click.Path(), help="Timing cache file to read and update (default: in BUNDLE).")
@friendly_errors
def build_engine(bundle, graphs, tensorrt_version, dla_core, implicit_int8, batch, timing_cache):
    """Build TensorRT engines for BUNDLE's graphs on this machine (<graph>.trt<major>.plan beside each graph)."""
    from litetext.runtimes import tensorrt_engine as trt_engine
    from litetext.bundle import Bundle

    trt = trt_engine.import_tensorrt()  # fails first, with how to install it
    opened = Bundle.open(bundle)
    if opened.manifest.get("target") not in ("tensorrt", "onnx"):
        raise LitetextError(f"{bundle} is a {opened.manifest.get('target')} bundle, not one TensorRT builds from")
    major = trt.__version__.split(".")[0]
    chosen = split_list(graphs) or opened.graphs
    unknown = [g for g in chosen if g not in opened.graphs]
    if unknown or (batch and not 1 <= batch[0] <= batch[1] <= batch[2]) or (dla_core is not None and dla_core < 0):
        raise LitetextError(f"{bundle} has graphs {', '.join(opened.graphs)} (not {', '.join(unknown)})" if unknown else
                            "--batch takes min <= opt <= max, all at least 1, and --dla-core a core number from 0")
    profile = tuple(batch) if batch else trt_engine.BATCH_PROFILE
    cache = Path(timing_cache) if timing_cache else opened.path / f"timing.trt{major}.cache"
    start = time.perf_counter()
    for name in chosen:
        graph_file = opened.path / opened.manifest["graphs"][name]["file"]
        suffix = f"trt{major}" + ("-implicit" if implicit_int8 else "") + (f"-dla{dla_core}" if dla_core is not None else "")
        out = graph_file.with_name(f"{graph_file.stem}.{suffix}.plan")
        click.echo(f"{name}: building {out.name} with TensorRT {trt.__version__}", err=True)
        built = trt_engine.build_engine(
            graph_file, opened.spec(name), out, batch_profile=profile, dla_core=dla_core, implicit_int8=implicit_int8,
            timing_cache=cache, expect_major=int(tensorrt_version) if tensorrt_version else None,
            log=lambda m: click.echo(f"  {m}", err=True),
        )
        click.echo(f"{name}: {out} ({out.stat().st_size / 2**20:.1f} MiB, {built['seconds']} s)")
    click.echo(f"done in {time.perf_counter() - start:.1f} s", err=True)
