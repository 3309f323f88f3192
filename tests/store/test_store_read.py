"""Reading the store: verify_tree and usage_bytes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from skillsvc.errors import InvalidArgument
from skillsvc.store import Store

from .conftest import DEFAULT_FILES, Staged, StagePackage


@pytest.fixture
def installed(store: Store, stage_package: StagePackage) -> tuple[Path, Staged]:
    staged = stage_package()
    final = store.commit_package(staged.tree, "demo", "1.0.0")
    return final, staged


def _tamper(path: Path, change: Callable[[Path], object]) -> None:
    """Apply ``change`` to a file in a read-only tree (making its directory writable)."""
    os.chmod(path.parent, 0o755)
    if path.exists():
        os.chmod(path, 0o644)
    change(path)


def test_an_intact_tree_has_no_problems(store: Store, installed: tuple[Path, Staged]) -> None:
    _final, staged = installed
    assert store.verify_tree("demo", "1.0.0", staged.files) == []


def test_modified_content_of_the_same_size_is_found(
    store: Store, installed: tuple[Path, Staged]
) -> None:
    final, staged = installed
    original = DEFAULT_FILES["SKILL.md"]
    _tamper(final / "SKILL.md", lambda p: p.write_bytes(original.upper()))
    problems = store.verify_tree("demo", "1.0.0", staged.files)
    assert len(problems) == 1
    assert problems[0].startswith("SKILL.md: content differs")


def test_truncated_file_is_found(store: Store, installed: tuple[Path, Staged]) -> None:
    final, staged = installed
    _tamper(final / "docs/guide/intro.md", lambda p: os.truncate(p, 10))
    assert store.verify_tree("demo", "1.0.0", staged.files) == [
        f"docs/guide/intro.md: size differs (recorded {len(DEFAULT_FILES['docs/guide/intro.md'])}"
        " bytes, found 10)"
    ]


def test_missing_file_is_found(store: Store, installed: tuple[Path, Staged]) -> None:
    final, staged = installed
    _tamper(final / "scripts/run.sh", Path.unlink)
    assert store.verify_tree("demo", "1.0.0", staged.files) == ["scripts/run.sh: missing"]


def test_extra_file_is_found(store: Store, installed: tuple[Path, Staged]) -> None:
    final, staged = installed
    _tamper(final / "docs/extra.txt", lambda p: p.write_bytes(b"x"))
    assert store.verify_tree("demo", "1.0.0", staged.files) == [
        "docs/extra.txt: unexpected regular file"
    ]


def test_file_replaced_by_a_symlink_is_found_and_not_followed(
    store: Store, installed: tuple[Path, Staged], tmp_path: Path
) -> None:
    final, staged = installed
    # A link to a file with exactly the recorded content must still be refused.
    twin = tmp_path / "twin"
    twin.write_bytes(DEFAULT_FILES["SKILL.md"])

    def replace(p: Path) -> None:
        p.unlink()
        p.symlink_to(twin)

    _tamper(final / "SKILL.md", replace)
    assert store.verify_tree("demo", "1.0.0", staged.files) == [
        "SKILL.md: is a symbolic link, expected a regular file"
    ]


def test_directory_replaced_by_a_symlink_is_found(
    store: Store, installed: tuple[Path, Staged], tmp_path: Path
) -> None:
    final, staged = installed
    copy = tmp_path / "guide"
    copy.mkdir()
    (copy / "intro.md").write_bytes(DEFAULT_FILES["docs/guide/intro.md"])

    def replace(p: Path) -> None:
        os.chmod(p, 0o755)
        os.chmod(p / "intro.md", 0o644)
        (p / "intro.md").unlink()
        p.rmdir()
        p.symlink_to(copy)

    _tamper(final / "docs/guide", replace)
    assert store.verify_tree("demo", "1.0.0", staged.files) == [
        "docs/guide/intro.md: missing",
        "docs/guide: unexpected symbolic link",
    ]


def test_file_replaced_by_a_fifo_or_directory_is_found(
    store: Store, installed: tuple[Path, Staged]
) -> None:
    final, staged = installed

    def to_fifo(p: Path) -> None:
        p.unlink()
        os.mkfifo(p)

    def to_dir(p: Path) -> None:
        p.unlink()
        p.mkdir()

    _tamper(final / "SKILL.md", to_fifo)
    _tamper(final / "scripts/run.sh", to_dir)
    assert store.verify_tree("demo", "1.0.0", staged.files) == [
        "SKILL.md: is a special file, expected a regular file",
        "scripts/run.sh: is a directory, expected a regular file",
    ]


def test_missing_version_dir_and_unsafe_records(store: Store) -> None:
    assert store.verify_tree("demo", "1.0.0", []) == ["the version directory is missing"]
    store.skill_dir("demo").mkdir()
    store.version_dir("demo", "1.0.0").mkdir()
    problems = store.verify_tree("demo", "1.0.0", [("../../../etc/passwd", 1, "0" * 64)])
    assert problems == ["'../../../etc/passwd': recorded path is not a safe relative path"]
    with pytest.raises(InvalidArgument):
        store.verify_tree("demo", "../1.0.0", [])


def test_usage_bytes_counts_packages_and_blobs(store: Store, stage_package: StagePackage) -> None:
    assert store.usage_bytes() == 0
    staged = stage_package()
    assert store.usage_bytes() == 0  # staging does not count
    store.commit_package(staged.tree, "demo", "1.0.0")
    store.activate("demo", "1.0.0")  # the link adds nothing
    expected = sum(len(data) for data in DEFAULT_FILES.values())
    assert store.usage_bytes() == expected
    # Archives in the local blob store (blobs/, kept/) count too.
    blob = store.blobs / staged.sha256
    os.link(staged.archive, blob)
    assert store.usage_bytes() == expected + len(staged.archive_bytes)


def test_version_dir_replaced_by_a_symlink_is_a_problem(
    store: Store, installed: tuple[Path, Staged], tmp_path: Path
) -> None:
    final, staged = installed
    os.chmod(final, 0o755)  # non-root needs write access to move a directory
    os.rename(final, tmp_path / "moved")
    final.symlink_to(tmp_path / "moved")
    assert store.verify_tree("demo", "1.0.0", staged.files) == [
        "the version directory leads outside the store (a symbolic link?)"
    ]
