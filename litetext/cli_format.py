"""What the command line says: help texts derived from the code's tables (so they cannot drift from what the
code does), and click's own usage errors in litetext's form ("error: ..." and how to fix it)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import click


class DerivedHelpOption(click.Option):
    """An option whose help is computed when help is shown (the tables it reads import heavy modules)."""

    def __init__(self, *args, derive_help: Callable[[], str], **kwargs):
        super().__init__(*args, **kwargs)
        self.derive_help = derive_help

    def get_help_record(self, ctx):
        if self.derive_help is not None:
            self.help, self.derive_help = self.derive_help(), None
        return super().get_help_record(ctx)


def precision_graphs() -> dict[str, dict[str, list[str]]]:
    """target -> precision -> the graphs it exports at that precision, from the targets' PRECISIONS and the
    graphs' and targets' tolerance tables."""
    from litetext.export.targets import TARGETS, target_module
    from litetext.models.graphs import GRAPH_NAMES, GRAPH_TOLERANCES

    table = {}
    for target in TARGETS:
        module = target_module(target)
        extra = getattr(module, "TOLERANCES", {})
        table[target] = {p: [g for g in GRAPH_NAMES if p in GRAPH_TOLERANCES[g] or p in extra.get(g, {})]
                         for p in module.PRECISIONS}
    return table


def _graphs_note(graphs: list[str]) -> str:
    from litetext.models.graphs import GRAPH_NAMES

    return "" if len(graphs) == len(GRAPH_NAMES) else f" ({', '.join(graphs)} only)"


def precision_help() -> str:
    return "; ".join(f"{target}: " + ", ".join(p + _graphs_note(g) for p, g in precisions.items())
                     for target, precisions in precision_graphs().items()) + "."


def calibrated_precisions() -> dict[str, list[str]]:
    """target -> the precisions that calibrate on real data (INT8, and a target's CALIBRATED_PRECISIONS)."""
    from litetext.export.targets import TARGETS, target_module

    out = {}
    for target in TARGETS:
        module = target_module(target)
        chosen = [p for p in module.PRECISIONS if p == "int8" or p in getattr(module, "CALIBRATED_PRECISIONS", ())]
        if chosen:
            out[target] = chosen
    return out


def calibration_images_help() -> str:
    table = precision_graphs()
    uses = [f"{target} {p}" for target, ps in calibrated_precisions().items() for p in ps
            if set(table[target][p]) - {"text_encoder"}]
    return (f"Image graphs (vision_encoder, heads) at a calibrated precision ({', '.join(uses)}): images or folders "
            "to calibrate on (default: two built-in photos).")


def calibration_prompts_help() -> str:
    uses = [f"{target} {p}" for target, ps in calibrated_precisions().items() for p in ps]
    return (f"Calibrated precisions ({', '.join(uses)}): prompt files or folders to calibrate on (default: built-in "
            "category names).")


class LitetextGroup(click.Group):
    """Usage errors (a missing option, an extra argument) print the usage and one line "error: ...", as
    litetext's own errors do, and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        shown = warnings.showwarning
        warnings.showwarning = _one_line_warning(shown)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `litetext` alone: the help, as click prints it
                click.echo(e.format_message(), err=True)
                sys.exit(e.exit_code)
            if e.ctx is not None:
                click.echo(e.ctx.get_usage(), err=True)
            hint = _extra_argument_hint(e)
            click.secho(f"error: {e.format_message()}{hint}", fg="red", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.secho("interrupted", fg="red", err=True)
            sys.exit(1)
        except click.ClickException as e:
            click.secho(f"error: {e.format_message()}", fg="red", err=True)
            sys.exit(e.exit_code)
        finally:
            warnings.showwarning = shown
        sys.exit(code if isinstance(code, int) else 0)  # --help and --version return 0 here


def _extra_argument_hint(error: click.exceptions.UsageError) -> str:
    """Space-separated lists given to an option that takes commas (`--graphs a b`)."""
    if "unexpected extra argument" in error.format_message():
        return " (options that take several values take them comma-separated: --graphs text_encoder,heads)"
    return ""


def _one_line_warning(fallback):
    """litetext's own warnings (a prompt truncated, ...) as one line "warning: ...", not Python's two lines
    with the path of the code that warned; other libraries' warnings as Python shows them."""

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.split(".")[0] == "litetext":
            click.secho(f"warning: {message}", fg="yellow", err=True)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show
