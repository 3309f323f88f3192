"""What "a script that untars into a folder" costs on this machine, in this process.

:func:`untar_install` is the in-process baseline of scenarios 1 and 2: receive the
chunks into a fresh staging file while hashing them with SHA-256, fsync it, extract
it with ``tarfile`` (``filter="data"``), fsync every extracted file and directory,
rename the tree into ``packages/`` and fsync that directory. No gRPC, no database.

:func:`tar_sync` is scenario 2's second baseline: ``tar xzf`` of the same archive
(already on disk) into a fresh directory, then ``sync``.

Nothing is deleted until the benchmark ends (BENCHMARKING.md, effect 1).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path


def _fsync(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def untar_install(root: Path, name: str, chunks: Sequence[bytes]) -> float:
    """Spool, hash, extract, fsync and rename one package; returns the seconds taken."""
    start = time.perf_counter()
    staging = root / "staging" / name
    staging.mkdir(parents=True)
    archive = staging / "archive"
    digest = hashlib.sha256()
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in chunks:
            digest.update(chunk)
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    digest.hexdigest()
    tree = staging / "tree"
    with tarfile.open(archive, "r:gz") as tf:
        tf.extractall(tree, filter="data")
    for dirpath, _dirnames, filenames in os.walk(tree):
        for filename in filenames:
            _fsync(os.path.join(dirpath, filename))
        _fsync(dirpath)
    packages = root / "packages"
    packages.mkdir(exist_ok=True)
    os.rename(tree, packages / name)
    _fsync(packages)
    return time.perf_counter() - start


def tar_sync(archive: Path, dest: Path) -> float:
    """``tar xzf archive -C dest && sync``; returns the seconds taken."""
    dest.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(["tar", "xzf", str(archive), "-C", str(dest)], check=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start
