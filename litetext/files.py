"""Files: written so that a reader (or a run resumed after a kill) never sees a partial one (into a temporary file
beside the target, flushed to disk, renamed over it at the end, removed if anything fails on the way), and
hashed for manifests and calibration sets."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` fills a binary file that then replaces `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make shipped files private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def save_figure_atomic(fig, path: str | Path, **options) -> Path:
    """A matplotlib figure written as write_atomic writes files (its format from the name)."""
    path = Path(path)
    write_atomic(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", **options))
    return path


@contextmanager
def folder_lock(out: str | Path):
    """Held while a process writes the folder `out`: a second writer of the same `out` fails at once with one
    line instead of racing (the later silently replacing the other). The lock file `.<name>.lock` beside `out`
    is removed on the way out."""
    import fcntl

    from litetext.errors import LitetextError

    out = Path(out).absolute()
    lock = out.with_name(f".{out.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LitetextError(f"another litetext process is writing {out}; wait for it to finish or choose "
                                "another output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a lock file its holder just removed
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        Path(lock).unlink(missing_ok=True)  # while still held, so no one locks a removed file
        os.close(fd)


def remove_orphans(out: Path) -> None:
    """A process killed outright (out of memory, SIGKILL) cannot clean up: remove the `.<name>.partial-PID-*`
    folders beside `out` whose process no longer runs."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def replaced_folder(out: str | Path, is_ours: Callable[[Path], bool]):
    """`with replaced_folder(out, is_ours) as tmp:` write into `tmp`, a hidden folder beside `out`; on success it
    replaces `out` whole (no stale file of an earlier run stays), on failure or interruption it is removed and
    `out` is untouched. An existing `out` is replaced only when empty or `is_ours(out)`: never a folder litetext
    did not write. Two writers of one `out` are kept apart by folder_lock."""
    from litetext.errors import LitetextError

    out = Path(out).absolute()
    if os.path.lexists(out) and not out.is_dir():
        raise LitetextError(f"{out} is a file, not a folder; give the path of a folder to write")
    if out.is_dir() and any(out.iterdir()) and not is_ours(out):
        raise LitetextError(f"{out} exists and holds files litetext did not write; choose another output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        remove_orphans(out)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the output private
            yield tmp
            old = None
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def builtin_asset(name: str) -> Path:
    """A file shipped in litetext/assets (tier-A photos, prompt lists, the BPE vocabulary)."""
    return Path(str(resources.files("litetext") / "assets" / name))
