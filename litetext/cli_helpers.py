"""Pieces every `litetext` command shares: one-line user errors, comma-separated options."""

from __future__ import annotations

import sys
from functools import wraps

import click

from litetext.errors import LitetextError


def friendly_errors(command):
    """User errors print one line and exit 2; Ctrl-C exits 130. Exports clean up after themselves."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LitetextError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted: nothing was written", fg="red", err=True)
            sys.exit(130)

    return run


def split_list(values) -> list[str]:
    """Accept both `--graphs a --graphs b` and `--graphs a,b`."""
    return [v for value in values for v in value.split(",") if v]
