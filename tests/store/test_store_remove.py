"""Removal of versions, skills and staging, read-only trees included."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from skillsvc.errors import FailedPrecondition, Internal
from skillsvc.store import Store

from .conftest import INSTANCE, StagePackage, make_read_only


def _commit(store: Store, stage_package: StagePackage, skill: str, version: str) -> str:
    staged = stage_package(archive_bytes=f"{skill} {version}".encode())
    store.commit_package(staged.tree, skill, version)
    return staged.sha256


def test_remove_version_leaves_nothing(store: Store, stage_package: StagePackage) -> None:
    _commit(store, stage_package, "demo", "1.0.0")
    _commit(store, stage_package, "demo", "2.0.0")
    store.activate("demo", "2.0.0")

    store.remove_version("demo", "1.0.0")

    assert not os.path.lexists(store.version_dir("demo", "1.0.0"))
    assert sorted(p.name for p in store.skill_dir("demo").iterdir()) == ["2.0.0", "current"]
    assert list(store.trash.iterdir()) == []
    store.remove_version("demo", "1.0.0")  # idempotent
    store.remove_version("never", "1.0.0")


def test_remove_version_refuses_the_current_one(store: Store, stage_package: StagePackage) -> None:
    _commit(store, stage_package, "demo", "1.0.0")
    store.activate("demo", "1.0.0")
    with pytest.raises(FailedPrecondition):
        store.remove_version("demo", "1.0.0")
    assert store.version_dir("demo", "1.0.0").is_dir()
    store.deactivate("demo")
    store.remove_version("demo", "1.0.0")
    assert not store.version_dir("demo", "1.0.0").exists()


def test_remove_skill_leaves_nothing(store: Store, stage_package: StagePackage) -> None:
    _commit(store, stage_package, "demo", "1.0.0")
    _commit(store, stage_package, "demo", "2.0.0")
    store.activate("demo", "1.0.0")

    store.remove_skill("demo")

    assert not os.path.lexists(store.skill_dir("demo"))
    assert list(store.trash.iterdir()) == []
    store.remove_skill("demo")  # idempotent


def test_removal_copes_with_read_only_and_unreadable_dirs(
    store: Store, stage_package: StagePackage
) -> None:
    _commit(store, stage_package, "demo", "1.0.0")
    version_dir = store.version_dir("demo", "1.0.0")
    os.chmod(version_dir / "docs", 0o000)  # even a directory nobody may list

    store.remove_skill("demo")

    assert not os.path.lexists(store.skill_dir("demo"))


def test_remove_instance_staging_copes_with_a_read_only_tree(
    store: Store, stage_package: StagePackage, tmp_path: Path
) -> None:
    staged = stage_package()  # as if a crash hit commit_package after sealing
    make_read_only(staged.tree)
    os.chmod(staged.tree / "docs" / "guide", 0o000)
    os.chmod(staged.archive, 0o444)
    # A link in staging must be removed, not followed (nor chmod-ed through).
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    os.chmod(outside, 0o555)
    (staged.tree.parent / "link").symlink_to(outside)
    os.chmod(staged.tree.parent, 0o555)
    other = store.new_work_dir("other-instance", "op")

    assert store.staging_instances() == sorted([INSTANCE, "other-instance"])
    store.remove_instance_staging(INSTANCE)

    assert not os.path.lexists(store.staging / INSTANCE)
    assert store.staging_instances() == ["other-instance"]
    assert other.is_dir()
    assert (outside / "keep").read_bytes() == b"keep"
    assert stat.S_IMODE(os.lstat(outside).st_mode) == 0o555
    store.remove_instance_staging(INSTANCE)  # idempotent


def test_instance_staging_and_work_dirs_are_private(store: Store) -> None:
    instance_dir = store.instance_staging("abc123")
    assert instance_dir == store.staging / "abc123"
    assert stat.S_IMODE(os.lstat(instance_dir).st_mode) == 0o700
    assert store.instance_staging("abc123") == instance_dir  # existing is fine

    work = store.new_work_dir("abc123", "op-1")
    assert work == instance_dir / "op-1"
    assert work.is_dir()
    assert stat.S_IMODE(os.lstat(work).st_mode) == 0o700
    with pytest.raises(Internal):
        store.new_work_dir("abc123", "op-1")


def test_staging_instances_ignores_the_store_own_entries(store: Store) -> None:
    assert store.staging_instances() == []
    store.new_work_dir("b", "x")
    store.new_work_dir("a", "x")
    store.trash.mkdir()
    (store.staging / "stray-file").write_bytes(b"")
    store.probe()
    assert store.staging_instances() == ["a", "b"]


def test_purge_trash_removes_leftovers(store: Store, stage_package: StagePackage) -> None:
    assert store.purge_trash() == 0
    staged = stage_package()
    store.trash.mkdir()
    os.rename(staged.tree, store.trash / "leftover")
    make_read_only(store.trash / "leftover")

    assert store.purge_trash() == 1
    assert list(store.trash.iterdir()) == []


def test_make_writable_and_remove_handles_files_links_and_trees(
    store: Store, stage_package: StagePackage
) -> None:
    staged = stage_package()
    make_read_only(staged.tree)
    link = staged.tree.parent / "link"
    link.symlink_to(staged.tree)

    store.make_writable_and_remove(link)
    assert staged.tree.is_dir()  # the link went, not its target
    store.make_writable_and_remove(staged.archive)
    store.make_writable_and_remove(staged.tree)
    store.make_writable_and_remove(staged.tree)  # missing: fine
    assert list(staged.tree.parent.iterdir()) == []
