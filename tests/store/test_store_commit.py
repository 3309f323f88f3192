"""commit_package: where files land, their modes, leftovers and refusals."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from skillsvc.errors import InvalidArgument, ResourceExhausted, Unavailable
from skillsvc.store import Store, _fsops

from .conftest import DEFAULT_FILES, INSTANCE, StagePackage


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_commit_puts_the_tree_in_place_read_only(store: Store, stage_package: StagePackage) -> None:
    staged = stage_package()

    final = store.commit_package(staged.tree, "demo", "1.0.0")

    assert final == store.packages / "demo" / "1.0.0"
    for rel, data in DEFAULT_FILES.items():
        assert (final / rel).read_bytes() == data
    assert _mode(final / "SKILL.md") == 0o444
    assert _mode(final / "docs/guide/intro.md") == 0o444
    assert _mode(final / "scripts/run.sh") == 0o555  # the exec bit is kept
    for directory in (final, final / "scripts", final / "docs", final / "docs/guide"):
        assert _mode(directory) == 0o555
    # The tree was consumed from staging; the archive is the blob store's business.
    assert not staged.tree.exists()
    assert list(store.blobs.iterdir()) == []
    assert store.verify_tree("demo", "1.0.0", staged.files) == []


def test_commit_replaces_a_leftover_version_dir(store: Store, stage_package: StagePackage) -> None:
    leftover = stage_package(files={"SKILL.md": b"old", "stale.txt": b"stale"})
    store.commit_package(leftover.tree, "demo", "1.0.0")
    fresh = stage_package(files={"SKILL.md": b"new"})

    final = store.commit_package(fresh.tree, "demo", "1.0.0")

    assert (final / "SKILL.md").read_bytes() == b"new"
    assert not (final / "stale.txt").exists()
    assert store.verify_tree("demo", "1.0.0", fresh.files) == []
    # The old tree went through the trash and is gone.
    assert list(store.trash.iterdir()) == []


def test_commit_without_syncfs_fsyncs_every_file(
    store: Store, stage_package: StagePackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(_fsops, "_libc_syncfs", lambda: None)  # as on a libc without it
    monkeypatch.setattr(os, "fsync", counting_fsync)
    staged = stage_package()

    store.commit_package(staged.tree, "demo", "1.0.0")

    # Every file and directory of the tree was fsynced in staging.
    for rel in ("SKILL.md", "scripts/run.sh", "docs/guide/intro.md", "docs/guide", "."):
        assert str((staged.tree / rel).resolve()) in synced
    assert store.verify_tree("demo", "1.0.0", staged.files) == []


def test_make_durable_prefers_syncfs_when_available(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    expected = "syncfs" if _fsops.syncfs_available() else "fsync"
    assert _fsops.make_durable(tmp_path) == expected
    assert _fsops.make_durable(tmp_path, use_syncfs=False) == "fsync"


def test_commit_refuses_a_tree_outside_staging(
    store: Store, stage_package: StagePackage, tmp_path: Path
) -> None:
    staged = stage_package()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "SKILL.md").write_bytes(b"x")

    with pytest.raises(InvalidArgument) as info:
        store.commit_package(outside, "demo", "1.0.0")
    assert info.value.violations[0].field == "tree"
    with pytest.raises(InvalidArgument):
        store.commit_package(store.staging, "demo", "1.0.0")
    # A link in staging to a directory elsewhere is not a tree in staging.
    link = staged.tree.parent / "link"
    link.symlink_to(outside)
    with pytest.raises(InvalidArgument):
        store.commit_package(link, "demo", "1.0.0")
    assert not (store.packages / "demo").exists()
    assert (outside / "SKILL.md").read_bytes() == b"x"


def test_commit_refuses_a_tree_with_a_symlink(
    store: Store, stage_package: StagePackage, tmp_path: Path
) -> None:
    staged = stage_package()
    (staged.tree / "escape").symlink_to(tmp_path)

    with pytest.raises(InvalidArgument, match="escape"):
        store.commit_package(staged.tree, "demo", "1.0.0")
    assert not (store.packages / "demo" / "1.0.0").exists()


def test_commit_refuses_bad_names_before_touching_anything(
    store: Store, stage_package: StagePackage
) -> None:
    staged = stage_package()
    with pytest.raises(InvalidArgument):
        store.commit_package(staged.tree, "../x", "1.0.0")
    with pytest.raises(InvalidArgument):
        store.commit_package(staged.tree, "demo", "../1.0.0")
    assert staged.tree.is_dir()
    assert staged.archive.is_file()
    assert _mode(staged.tree / "SKILL.md") == 0o644  # not sealed either


def test_a_full_disk_is_resource_exhausted_and_leaves_nothing_final(
    store: Store, stage_package: StagePackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = stage_package()
    real_rename = os.rename

    def rename(src: object, dst: object) -> None:
        if str(dst).startswith(str(store.packages)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(ResourceExhausted) as info:
        store.commit_package(staged.tree, "demo", "1.0.0")
    assert info.value.reason == "STORE_FULL"
    assert not (store.packages / "demo" / "1.0.0").exists()
    assert staged.tree.is_dir()  # still in staging, for staging cleanup


def test_other_os_errors_are_unavailable(
    store: Store, stage_package: StagePackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = stage_package()

    def fail(*args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(Unavailable) as info:
        store.commit_package(staged.tree, "demo", "1.0.0")
    assert info.value.reason == "STORE_UNAVAILABLE"


def test_staged_trees_live_under_the_instance(store: Store, stage_package: StagePackage) -> None:
    staged = stage_package()
    assert staged.tree.is_relative_to(store.staging / INSTANCE)
