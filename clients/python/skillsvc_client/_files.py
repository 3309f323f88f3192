"""Writing downloaded archives: nothing at the destination until the digest matched."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from skillsvc_client._errors import LocalError
from skillsvc_client.v1 import skill_service_pb2


class IntegrityError(LocalError):
    """Downloaded bytes do not match the digest the server announced."""


def write_verified(
    destination: Path, pieces: Iterable[bytes], info: skill_service_pb2.PackageInfo
) -> None:
    """Write ``pieces`` to ``destination`` atomically if their sha256 is ``info.sha256``."""
    digest = hashlib.sha256()
    size = 0
    parent = destination.parent if str(destination.parent) else Path()
    if destination.is_dir():
        raise LocalError(f"{destination}: is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{destination.name}.", suffix=".part")
    except OSError as exc:
        raise LocalError(f"{destination}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                digest.update(piece)
                size += len(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != info.sha256 or size != info.size_bytes:
            raise IntegrityError(
                f"{info.skill_id} {info.version}: downloaded {size} bytes with sha256 "
                f"{digest.hexdigest()}, the server announced {info.size_bytes} bytes with "
                f"sha256 {info.sha256}"
            )
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
