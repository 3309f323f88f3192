"""Path safety: every path built from an id, version or digest stays in its place."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from skillsvc.errors import InvalidArgument, Unavailable
from skillsvc.store import Store

BAD_SKILL_IDS = ["../x", "a/b", "", ".", "..", "/abs", "Demo", "x\0y", "-x", "a--b", "a" * 65]
BAD_VERSIONS = ["1.0", "v1.0.0", "../1.0.0", "1.0.0/..", "1.0.0/x", "1.0.0\0", "current", ".."]


def test_paths_follow_the_layout(store: Store) -> None:
    assert store.skill_dir("demo") == store.root / "packages" / "demo"
    assert store.version_dir("demo", "1.2.3-rc.1+build.5") == (
        store.root / "packages" / "demo" / "1.2.3-rc.1+build.5"
    )
    assert store.current_link("demo") == store.root / "packages" / "demo" / "current"


@pytest.mark.parametrize("skill_id", BAD_SKILL_IDS)
def test_bad_skill_ids_are_refused(store: Store, skill_id: str) -> None:
    builds: list[Callable[[], Path]] = [
        lambda: store.version_dir(skill_id, "1.0.0"),
        lambda: store.current_link(skill_id),
        lambda: store.skill_dir(skill_id),
    ]
    for build in builds:
        with pytest.raises(InvalidArgument) as info:
            build()
        assert info.value.violations[0].field == "skill_id"


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_versions_are_refused(store: Store, version: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        store.version_dir("demo", version)
    assert info.value.violations[0].field == "version"


def test_a_planted_link_in_packages_is_refused(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "1.0.0").mkdir(parents=True)
    (store.packages / "evil").symlink_to(outside)
    (store.packages / "demo").mkdir()
    (store.packages / "demo" / "2.0.0").symlink_to(outside / "1.0.0")

    with pytest.raises(InvalidArgument):
        store.version_dir("evil", "1.0.0")
    with pytest.raises(InvalidArgument):
        store.current_link("evil")
    with pytest.raises(InvalidArgument):
        store.version_dir("demo", "2.0.0")
    # Removal through the link would have deleted the outside tree.
    with pytest.raises(InvalidArgument):
        store.remove_version("evil", "1.0.0")
    assert (outside / "1.0.0").is_dir()


def test_a_link_loop_is_refused(store: Store) -> None:
    os.symlink("loop", store.packages / "loop")
    with pytest.raises(InvalidArgument):
        store.version_dir("loop", "1.0.0")


def test_the_root_may_be_reached_through_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    store = Store(tmp_path / "alias")
    store.init()
    assert store.version_dir("demo", "1.0.0") == tmp_path / "alias" / "packages/demo/1.0.0"


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".hidden", "-x", "x\0"])
def test_bad_staging_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(InvalidArgument):
        store.instance_staging(name)
    with pytest.raises(InvalidArgument):
        store.new_work_dir("ok", name)
    with pytest.raises(InvalidArgument):
        store.remove_instance_staging(name)


def test_make_writable_and_remove_stays_inside_the_store(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for path in (
        outside,
        store.root,
        store.packages,
        store.blobs,
        store.blobs.parent,
        store.staging,
        store.staging / "..",
        store.packages / ".." / ".." / "outside",
    ):
        with pytest.raises(InvalidArgument):
            store.make_writable_and_remove(path)
    assert outside.is_dir()
    assert store.packages.is_dir()
    assert store.staging.is_dir()


def test_init_refuses_a_layout_split_across_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "store")
    real_stat = os.stat

    def split_stat(path: Path) -> os.stat_result:
        result = real_stat(path)
        if path == store.staging:
            fields = list(result)
            fields[2] += 1  # st_dev
            return os.stat_result(fields)
        return result

    monkeypatch.setattr(os, "stat", split_stat)
    with pytest.raises(Unavailable) as info:
        store.init()
    assert info.value.reason == "STORE_MISCONFIGURED"
