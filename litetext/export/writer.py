"""Writing a bundle atomically: it is built in a hidden temporary folder beside OUT and renamed into place only
when everything in it has been written and checked, so a failed, interrupted or out-of-space export leaves
nothing at OUT."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from litetext.bundle import MANIFEST
from litetext.errors import LitetextError
from litetext.files import folder_lock, remove_orphans


class BundleWriter:
    """Context manager: `with BundleWriter(out, force) as tmp:` write into `tmp`; on success it becomes `out`."""

    def __init__(self, out: str | Path, force: bool = False):
        self.out = Path(out).absolute()
        self.force = force
        self.tmp: Path | None = None
        if os.path.lexists(self.out) and not self.out.is_dir():  # --force never replaces a file with a bundle
            raise LitetextError(f"{self.out} is a file, not a folder; give the path of a folder to write")
        if self.out.exists() and not force:
            raise LitetextError(f"{self.out} already exists; pass --force to replace it")
        if self.out.exists() and not (self.out / MANIFEST).is_file() and any(self.out.iterdir()):
            # Never delete a folder litetext did not make, --force or not.
            raise LitetextError(f"{self.out} exists and is not a litetext bundle; choose another output folder")

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = folder_lock(self.out)  # a second export to the same OUT fails here, at once
        self._lock.__enter__()
        try:
            if self.out.exists() and not self.force:  # written by another export since __init__ looked
                raise LitetextError(f"{self.out} already exists; pass --force to replace it")
            remove_orphans(self.out)  # partial folders of exports killed outright (out of memory)
            self.tmp = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.partial-{os.getpid()}-"))
            os.chmod(self.tmp, 0o755)  # mkdtemp's 0700 would make the bundle private once renamed into place
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            return self._finish(exc_type, exc)
        finally:
            self._lock.__exit__(None, None, None)

    def _finish(self, exc_type, exc) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise LitetextError(
                    f"no space left on the device while writing {self.out}; nothing was written. "
                    "Free some space or choose another output folder"
                ) from None
            return False
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False
