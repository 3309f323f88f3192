"""Checking an installed tree against the file list recorded at install time.

Used before a rollback re-activates an old version: the files must still be exactly
what was validated then. Links are never followed: the tree is scanned with ``lstat``
and files are opened with ``O_NOFOLLOW``, so a link planted in the tree is reported,
not read through.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from skillsvc.store._fsops import open_no_follow, sha256_fd


class _Kind(enum.Enum):
    FILE = "regular file"
    DIRECTORY = "directory"
    SYMLINK = "symbolic link"
    OTHER = "special file"


def _kind(mode: int) -> _Kind:
    if stat.S_ISREG(mode):
        return _Kind.FILE
    if stat.S_ISDIR(mode):
        return _Kind.DIRECTORY
    if stat.S_ISLNK(mode):
        return _Kind.SYMLINK
    return _Kind.OTHER


def is_safe_relative(path: str) -> bool:
    """True for a normalised relative POSIX path that cannot leave its base."""
    if not path or "\0" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _scan(top: Path, problems: list[str]) -> dict[str, _Kind]:
    """Every entry below ``top`` by relative POSIX path, links not followed."""
    found: dict[str, _Kind] = {}

    def _unreadable(exc: OSError) -> None:
        where = os.path.relpath(exc.filename, top) if exc.filename else "."
        problems.append(f"{where}: directory cannot be listed ({exc.strerror})")

    # os.walk lists links to directories among dirnames but never descends into them.
    for dirpath, dirnames, filenames in os.walk(top, onerror=_unreadable):
        rel_dir = os.path.relpath(dirpath, top)
        for name in (*dirnames, *filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            try:
                found[rel] = _kind(os.lstat(os.path.join(dirpath, name)).st_mode)
            except FileNotFoundError:
                continue
    return found


def _check_file(top: Path, rel: str, size: int, sha256: str) -> str | None:
    """The problem with one recorded regular file, or None when it is intact."""
    try:
        fd = open_no_follow(str(top / rel))
    except FileNotFoundError:
        return f"{rel}: missing"
    except OSError as exc:
        return f"{rel}: cannot be opened ({exc.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return f"{rel}: is a {_kind(st.st_mode).value}, expected a regular file"
        # A size mismatch (truncation, appended bytes) is decided without hashing.
        if st.st_size != size:
            return f"{rel}: size differs (recorded {size} bytes, found {st.st_size})"
        actual = sha256_fd(fd)
    except OSError as exc:
        return f"{rel}: cannot be read ({exc.strerror})"
    finally:
        os.close(fd)
    if actual != sha256.lower():
        return f"{rel}: content differs (recorded sha256 {sha256.lower()}, found {actual})"
    return None


def verify_tree(top: Path, files: Sequence[tuple[str, int, str]]) -> list[str]:
    """Problems found comparing the tree at ``top`` with ``files``; empty when intact.

    ``files`` holds ``(relative_path, size, sha256_hex)`` for every regular file the
    tree had at install. Directories are implied by the files and not reported;
    every other entry not in ``files`` is.
    """
    try:
        top_mode = os.lstat(top).st_mode
    except FileNotFoundError:
        return ["the version directory is missing"]
    if not stat.S_ISDIR(top_mode):
        return [f"the version directory is a {_kind(top_mode).value}, not a directory"]

    problems: list[str] = []
    expected: dict[str, tuple[int, str]] = {}
    for rel, size, sha256 in files:
        if is_safe_relative(rel):
            expected[rel] = (size, sha256)
        else:
            # Never open a recorded path that could lead outside the tree.
            problems.append(f"{rel!r}: recorded path is not a safe relative path")

    found = _scan(top, problems)
    for rel, (size, sha256) in sorted(expected.items()):
        kind = found.get(rel)
        if kind is None:
            problems.append(f"{rel}: missing")
        elif kind is not _Kind.FILE:
            problems.append(f"{rel}: is a {kind.value}, expected a regular file")
        else:
            problem = _check_file(top, rel, size, sha256)
            if problem is not None:
                problems.append(problem)
    for rel, kind in sorted(found.items()):
        if kind is not _Kind.DIRECTORY and rel not in expected:
            problems.append(f"{rel}: unexpected {kind.value}")
    return problems
