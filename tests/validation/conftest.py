"""Fixtures for the validator tests: run validate_archive and prove nothing escaped dest."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from skillsvc.validation import Limits, Report, validate_archive


def snapshot(root: Path, *, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` except ``skip``'s subtree: (mode, size, mtime_ns)."""
    found: dict[str, tuple[int, int, int]] = {}
    skipped = str(skip)
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(directory, d) != skipped]
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            # A directory's own size and mtime change when dest is created in it.
            shape = (0, 0) if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns)
            found[path] = (st.st_mode, *shape)
    return found


def assert_no_links(dest: Path) -> None:
    """No symlink, special file or hard-linked file anywhere under ``dest``."""
    if not dest.exists():
        return
    for directory, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            st = (Path(directory) / name).lstat()
            assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode), name
            assert not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1), name
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), name


@dataclass(frozen=True)
class Outcome:
    """A report together with where the archive was extracted."""

    report: Report
    dest: Path
    archive: Path

    @property
    def codes(self) -> set[str]:
        """The codes of every violation."""
        return {v.code.value for v in self.report.violations}

    @property
    def errors(self) -> set[str]:
        """The codes of error violations."""
        return {v.code.value for v in self.report.violations if v.severity == "ERROR"}


Validate = Callable[..., Outcome]


@pytest.fixture
def validate(tmp_path: Path) -> Validate:
    """Run validate_archive on bytes; assert nothing outside dest changed, no links."""
    counter = iter(range(1_000_000))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched")
    # dest sits a few levels down so that '../' escapes would still land in tmp_path.
    work = tmp_path / "work" / "a" / "b"
    work.mkdir(parents=True)

    def run(
        data: bytes,
        limits: Limits | None = None,
        *,
        suffix: str = ".bin",
        **kwargs: str,
    ) -> Outcome:
        n = next(counter)
        archive = tmp_path / f"archive-{n}{suffix}"
        archive.write_bytes(data)
        dest = work / f"dest-{n}"
        before = snapshot(tmp_path, skip=dest)
        report = validate_archive(archive, dest, limits or Limits(), **kwargs)
        assert snapshot(tmp_path, skip=dest) == before
        assert_no_links(dest)
        return Outcome(report, dest, archive)

    return run
