"""The current link: activate, swap atomically, read, deactivate."""

from __future__ import annotations

import os
import threading

import pytest

from skillsvc.errors import Internal, NotFound
from skillsvc.store import Store

from .conftest import StagePackage


def _commit(store: Store, stage_package: StagePackage, version: str, text: bytes) -> None:
    staged = stage_package(files={"SKILL.md": text}, executable=frozenset())
    store.commit_package(staged.tree, "demo", version)


def test_activate_creates_a_relative_link(store: Store, stage_package: StagePackage) -> None:
    _commit(store, stage_package, "1.0.0", b"one")
    assert store.current_version("demo") is None

    store.activate("demo", "1.0.0")

    link = store.current_link("demo")
    assert os.readlink(link) == "1.0.0"  # relative: survives moving the root
    assert (link / "SKILL.md").read_bytes() == b"one"
    assert store.current_version("demo") == "1.0.0"
    # No temporary link is left beside it.
    assert sorted(p.name for p in link.parent.iterdir()) == ["1.0.0", "current"]


def test_activate_replaces_the_link(store: Store, stage_package: StagePackage) -> None:
    _commit(store, stage_package, "1.0.0", b"one")
    _commit(store, stage_package, "2.0.0", b"two")
    store.activate("demo", "1.0.0")
    store.activate("demo", "2.0.0")
    assert store.current_version("demo") == "2.0.0"
    assert (store.current_link("demo") / "SKILL.md").read_bytes() == b"two"
    store.activate("demo", "2.0.0")  # activating the current version again is harmless
    assert store.current_version("demo") == "2.0.0"


def test_activate_refuses_a_missing_version(store: Store, stage_package: StagePackage) -> None:
    with pytest.raises(NotFound):
        store.activate("demo", "1.0.0")
    _commit(store, stage_package, "1.0.0", b"one")
    store.activate("demo", "1.0.0")
    with pytest.raises(NotFound):
        store.activate("demo", "9.9.9")
    assert store.current_version("demo") == "1.0.0"


def test_readers_never_see_the_link_missing_during_swaps(
    store: Store, stage_package: StagePackage
) -> None:
    _commit(store, stage_package, "1.0.0", b"one")
    _commit(store, stage_package, "2.0.0", b"two")
    store.activate("demo", "1.0.0")
    skill_md = store.current_link("demo") / "SKILL.md"
    stop = threading.Event()
    failures: list[BaseException] = []
    seen: set[bytes] = set()
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                seen.add(skill_md.read_bytes())
                reads += 1
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            store.activate("demo", "2.0.0" if i % 2 == 0 else "1.0.0")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert failures == []
    assert reads > 0
    assert seen <= {b"one", b"two"}
    assert store.current_version("demo") == "1.0.0"


def test_deactivate_removes_the_link(store: Store, stage_package: StagePackage) -> None:
    store.deactivate("demo")  # nothing to remove: fine
    _commit(store, stage_package, "1.0.0", b"one")
    store.activate("demo", "1.0.0")

    store.deactivate("demo")

    assert store.current_version("demo") is None
    assert not os.path.lexists(store.current_link("demo"))
    assert (store.version_dir("demo", "1.0.0") / "SKILL.md").is_file()
    store.deactivate("demo")


def test_a_corrupt_current_entry_is_internal(store: Store) -> None:
    skill_dir = store.skill_dir("demo")
    skill_dir.mkdir()
    os.symlink("../../elsewhere", skill_dir / "current")
    with pytest.raises(Internal):
        store.current_version("demo")
    os.unlink(skill_dir / "current")
    (skill_dir / "current").mkdir()
    with pytest.raises(Internal):
        store.current_version("demo")
