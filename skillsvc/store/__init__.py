"""The file store: packages, original archives and a private staging area.

Layout under the root (SPEC §5)::

    packages/<skill_id>/<version>/   extracted, read-only
    packages/<skill_id>/current      symlink to the current version
    blobs/sha256/<hex>               original archives
    staging/                         private work area, same filesystem
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from skillsvc.errors import Unavailable


class Store:
    """The store's directory layout and its health."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.packages = root / "packages"
        self.blobs = root / "blobs" / "sha256"
        self.staging = root / "staging"

    def init(self) -> None:
        """Create the layout (idempotent) with private permissions on staging."""
        for directory in (self.packages, self.blobs):
            directory.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True, mode=0o700)

    def probe(self) -> None:
        """Raise Unavailable unless the store can be written (blocking; run in a thread)."""
        probe = self.staging / f".probe-{uuid.uuid4().hex}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise Unavailable(f"the file store is not writable: {exc.strerror}") from exc

    def clear_staging(self) -> int:
        """Remove everything left in staging by a previous process; returns the count."""
        removed = 0
        for entry in self.staging.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed
