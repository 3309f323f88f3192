"""Materialisation on one node: races between processes of a host, refusals, removals.

These drive :class:`Materialiser` directly against the real database and store of a
running server (its blob store is the local one); tests/test_replicas.py covers
several hosts sharing a bucket.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from skillsvc.core.materialise import Materialiser, Refused
from skillsvc.server import App, installer_settings
from skillsvc.v1 import skill_service_pb2
from tests.helpers import expect_status, reason
from tests.install.conftest import Stub, install_and_wait
from tests.packages import skill_archive


def _count(result: str) -> float:
    value = REGISTRY.get_sample_value("skill_materialisations_total", {"result": result})
    return value or 0.0


def _fetches() -> float:
    labels = {"op": "fetch", "result": "ok"}
    return REGISTRY.get_sample_value("skill_blob_store_requests_total", labels) or 0.0


def _materialiser(app: App, name: str) -> Materialiser:
    return Materialiser(
        app.db,
        app.store,
        app.blobs,
        installer_settings(app.settings).limits,
        name,
    )


async def _install(stub: Stub, skill: str, *versions: str) -> None:
    for version in versions:
        final, _ = await install_and_wait(stub, skill, skill_archive(skill, version))
        assert final.error.code == 0, final.error


async def _files(app: App, skill: str, version: str) -> list[tuple[str, int, str]]:
    rows = await app.db.repo.package_files(skill, version)
    return [(f["path"], f["size"], f["sha256"]) for f in rows]


def _forget(app: App, skill: str, version: str) -> None:
    """As on a node that never had ``version``: no tree (and no link to it)."""
    if app.store.current_version(skill) == version:
        app.store.deactivate(skill)
    app.store.remove_version(skill, version)


def _damage_blob(app: App, sha256: str) -> None:
    blob = app.store.root / "blobs" / "sha256" / sha256
    os.chmod(blob, 0o644)
    blob.write_bytes(b"something else entirely")


async def test_processes_of_one_host_materialise_a_version_once(
    app: App, stub: Stub, skill: str
) -> None:
    await _install(stub, skill, "1.0.0", "1.1.0")
    _forget(app, skill, "1.1.0")
    before, fetched = _count("success"), _fetches()
    # Six processes of one host hear the same change at once.
    peers = [_materialiser(app, f"peer-{i}") for i in range(6)]
    await asyncio.gather(*(m.reconcile(skill) for m in peers))
    assert app.store.current_version(skill) == "1.1.0"
    assert app.store.verify_tree(skill, "1.1.0", await _files(app, skill, "1.1.0")) == []
    assert _count("success") - before == 1
    assert _fetches() - fetched == 1, "the others waited for the host lock, then found it"
    for i in range(6):
        assert list((app.store.staging / f"peer-{i}").glob("*")) == []
    # Idempotent: nothing to do the second time.
    await peers[0].reconcile(skill)
    assert _count("success") - before == 1


async def test_a_damaged_archive_is_refused_and_the_link_stays(
    app: App, stub: Stub, skill: str
) -> None:
    await _install(stub, skill, "1.0.0", "1.1.0")
    package = await app.db.repo.get_package(skill, "1.1.0", None)
    assert package is not None
    _forget(app, skill, "1.1.0")
    app.store.activate(skill, "1.0.0")  # what this node served before the change
    _damage_blob(app, package.sha256)
    before = _count("corrupt")
    with pytest.raises(Refused) as refused:
        await _materialiser(app, "peer").reconcile(skill)
    assert refused.value.result == "corrupt"
    assert _count("corrupt") - before == 1
    assert app.store.current_version(skill) == "1.0.0"
    assert not (app.store.root / "packages" / skill / "1.1.0").exists()


async def test_rows_deleted_elsewhere_take_their_files_with_them(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await _install(stub, skill, "1.0.0", "1.1.0")
    skill_dir: Path = app.store.root / "packages" / skill
    # As another node's deletions look from here: rows gone, files still present.
    await db.execute("DELETE FROM skill_packages WHERE version = '1.0.0'")
    peer = _materialiser(app, "peer")
    await peer.reconcile(skill)
    assert sorted(p.name for p in skill_dir.iterdir()) == ["1.1.0", "current"]
    async with db.transaction():
        await db.execute("DELETE FROM skill_packages")
        await db.execute("DELETE FROM skill_definitions")
    await peer.reconcile(skill)
    assert not skill_dir.exists()


async def test_rollback_fetches_a_target_this_node_does_not_have(
    app: App, stub: Stub, skill: str
) -> None:
    await _install(stub, skill, "1.0.0", "1.1.0", "1.2.0")
    _forget(app, skill, "1.0.0")
    await stub.Rollback(
        skill_service_pb2.RollbackRequest(skill_id=skill, target_version="1.0.0", reason="r")
    )
    assert app.store.current_version(skill) == "1.0.0"
    assert app.store.verify_tree(skill, "1.0.0", await _files(app, skill, "1.0.0")) == []
    # A target whose archive is damaged is refused, and nothing changes.
    package = await app.db.repo.get_package(skill, "1.1.0", None)
    assert package is not None
    _forget(app, skill, "1.1.0")
    _damage_blob(app, package.sha256)
    error = await expect_status(
        stub.Rollback(
            skill_service_pb2.RollbackRequest(skill_id=skill, target_version="1.1.0", reason="r")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == "INTEGRITY_CHECK_FAILED"
    assert app.store.current_version(skill) == "1.0.0"


async def test_a_node_missing_a_current_version_starts_and_catches_up(
    app: App, stub: Stub, skill: str, make_app: Any
) -> None:
    await _install(stub, skill, "1.0.0", "1.1.0")
    _forget(app, skill, "1.1.0")
    # It used to refuse to start ("version 1.1.0 ... is not in the file store").
    again: App = await make_app()
    async with asyncio.timeout(30):
        while not again.materialiser.caught_up:
            await asyncio.sleep(0.01)
    assert again.store.current_version(skill) == "1.1.0"
    assert again.store.verify_tree(skill, "1.1.0", await _files(app, skill, "1.1.0")) == []
    assert await again.check_health()


async def test_files_that_differ_from_the_recorded_digests_are_refused(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await _install(stub, skill, "1.0.0", "1.1.0")
    _forget(app, skill, "1.0.0")
    # The archive is intact; what was recorded at install says one file was different.
    await db.execute(
        "UPDATE skill_packages SET files = jsonb_set(files, '{0,sha256}', to_jsonb($1::text)) "
        "WHERE version = '1.0.0'",
        "0" * 64,
    )
    error = await expect_status(
        stub.Rollback(
            skill_service_pb2.RollbackRequest(skill_id=skill, target_version="1.0.0", reason="r")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == "INTEGRITY_CHECK_FAILED"
    assert "differs" in error.details()
    assert app.store.current_version(skill) == "1.1.0"
    assert not (app.store.root / "packages" / skill / "1.0.0").exists()
