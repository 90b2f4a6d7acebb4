"""Pieces every `litetext` command shares: one-line user errors, comma-separated options."""

from __future__ import annotations

import errno
import signal
import sys
from functools import wraps

import click

from litetext.errors import LitetextError


OS_ERROR_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space or choose another place",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another place",
    errno.EACCES: "permission denied; choose a place you can read or write",
    errno.EPERM: "operation not permitted; choose a place you can read or write",
    errno.EROFS: "read-only file system; choose a writable place",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder where a file was expected",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long",
}


def os_error_line(e: OSError) -> str:
    """An OSError as one line: what failed, where, and what to do."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = OS_ERROR_HINTS.get(e.errno, e.strerror or str(e) or type(e).__name__)
    return f"{where}: {what}" if where else what


def _terminate(signum, frame):
    raise KeyboardInterrupt  # so SIGTERM cleans up exactly as Ctrl-C does


def friendly_errors(command):
    """User errors print one line and exit 2, and so do OS errors (full disk, permissions, read-only folders);
    Ctrl-C and SIGTERM exit 130. Exports clean up after themselves."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            previous = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            return command(*args, **kwargs)
        except LitetextError as e:
            click.secho(f"error: {_one_line(str(e))}", fg="red", err=True)
            sys.exit(2)
        except OSError as e:
            click.secho(f"error: {_one_line(os_error_line(e))}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted: nothing was written", fg="red", err=True)
            sys.exit(130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return run


def _one_line(message: str) -> str:
    return " ".join(message.split("\n"))


def split_list(values) -> list[str]:
    """Accept both `--graphs a --graphs b` and `--graphs a,b`."""
    return [v for value in values for v in value.split(",") if v]
