"""Marks: which archive each version's tree was placed from, beside the tree."""

from __future__ import annotations

import os

from skillsvc.store import Store

from .conftest import StagePackage

X = "a" * 64
Y = "b" * 64


def test_a_placed_tree_is_marked_with_its_archive_and_the_mark_costs_no_bytes(
    store: Store, stage_package: StagePackage
) -> None:
    tree = stage_package().tree
    store.seal_package(tree)
    store.place_package(tree, "demo", "1.0.0", sha256=X)
    store.commit_package(stage_package().tree, "demo", "1.1.0")  # no digest: unmarked
    mark = store.packages / "demo" / ".1.0.0.sha256"
    assert os.readlink(mark) == X
    assert store.placed_sha256("demo", "1.0.0") == X
    assert store.placed_sha256("demo", "1.1.0") is None
    assert store.placed("demo") == {"1.0.0": X, "1.1.0": None}
    assert store.placed("other") is None
    # Not a version, not counted as stored bytes.
    assert store.versions_on_disk() == {"demo": ["1.0.0", "1.1.0"]}
    sizes = sum(p.stat().st_size for p in (store.packages / "demo").rglob("*") if p.is_file())
    assert store.usage_bytes() == sizes
    store.mark_placed("demo", "1.1.0", Y)
    assert store.placed_sha256("demo", "1.1.0") == Y


def test_placing_keeps_a_tree_from_the_same_archive_and_replaces_another(
    store: Store, stage_package: StagePackage
) -> None:
    store.commit_package(stage_package({"SKILL.md": b"old"}).tree, "demo", "1.0.0", sha256=X)
    same = stage_package({"SKILL.md": b"same"}).tree
    store.seal_package(same)
    assert not store.place_version(same, "demo", "1.0.0", X)
    assert (store.packages / "demo" / "1.0.0" / "SKILL.md").read_bytes() == b"old"
    other = stage_package({"SKILL.md": b"new"}).tree
    store.seal_package(other)
    assert store.place_version(other, "demo", "1.0.0", Y)
    assert (store.packages / "demo" / "1.0.0" / "SKILL.md").read_bytes() == b"new"
    assert store.placed_sha256("demo", "1.0.0") == Y
    # An install's placement without a digest leaves no stale mark behind.
    store.commit_package(stage_package().tree, "demo", "1.0.0")
    assert store.placed_sha256("demo", "1.0.0") is None


def test_the_mark_goes_with_its_tree(store: Store, stage_package: StagePackage) -> None:
    for version in ("1.0.0", "1.1.0"):
        store.commit_package(stage_package().tree, "demo", version, sha256=X)
    store.remove_version("demo", "1.0.0")
    assert not os.path.lexists(store.packages / "demo" / ".1.0.0.sha256")
    stashed = store.stash("inst", "demo", "1.1.0")
    assert stashed is not None
    assert store.placed("demo") == {}
    # Put back after a crash, it is unmarked: checked before it is trusted again.
    assert store.unstash(stashed, "demo", "1.1.0")
    assert store.placed("demo") == {"1.1.0": None}
