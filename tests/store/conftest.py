"""Fixtures for the file-store tests: a fresh store per test and staged packages.

No database and no server: the store is plain files, so every test builds its own
under ``tmp_path``. The process may run as root, where permission bits do not stop
writes, so modes are asserted by reading ``stat``, never by expecting EACCES.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from skillsvc.store import Store
from skillsvc.store._fsops import make_writable_and_remove

INSTANCE = "0123456789abcdef0123456789abcdef"
"""The instance id tests stage under (a UUID hex, as the server uses)."""

DEFAULT_FILES: Mapping[str, bytes] = {
    "SKILL.md": b"---\nname: demo\n---\nDemo skill.\n",
    "scripts/run.sh": b"#!/bin/sh\necho hello\n",
    "docs/guide/intro.md": b"# Intro\n" * 100,
}
DEFAULT_EXECUTABLE = frozenset({"scripts/run.sh"})


@dataclass(frozen=True)
class Staged:
    """A package written into staging, ready for ``commit_package``."""

    tree: Path
    """The extracted tree."""
    archive: Path
    """The "original archive" (arbitrary bytes standing in for one)."""
    sha256: str
    """Hex SHA-256 of the archive."""
    archive_bytes: bytes
    """The archive's content."""
    files: list[tuple[str, int, str]]
    """``(relative_path, size, sha256)`` of every file, as recorded at install."""


StagePackage = Callable[..., Staged]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An initialised, empty store, removed afterwards.

    The removal matters when tests run without root: pytest cannot delete the
    read-only trees a store holds when it later prunes old temporary directories.
    """
    s = Store(tmp_path / "store")
    s.init()
    yield s
    make_writable_and_remove(tmp_path)


@pytest.fixture
def stage_package(store: Store) -> StagePackage:
    """Write a package tree and archive into a new work dir under staging."""
    counter = itertools.count()

    def stage(
        files: Mapping[str, bytes] = DEFAULT_FILES,
        executable: frozenset[str] = DEFAULT_EXECUTABLE,
        archive_bytes: bytes | None = None,
    ) -> Staged:
        work = store.new_work_dir(INSTANCE, f"op-{next(counter)}")
        tree = work / "tree"
        tree.mkdir(mode=0o755)
        for rel, data in files.items():
            path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, 0o755 if rel in executable else 0o644)
        if archive_bytes is None:
            archive_bytes = b"archive of " + repr(sorted(files.items())).encode()
        archive = work / "archive"
        archive.write_bytes(archive_bytes)
        os.chmod(archive, 0o600)
        records = [(rel, len(data), _digest(data)) for rel, data in sorted(files.items())]
        return Staged(tree, archive, _digest(archive_bytes), archive_bytes, records)

    return stage


def make_read_only(top: Path) -> None:
    """Make a tree as read-only as a committed one (and one directory 0o000)."""
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)
    os.chmod(top, 0o555)
