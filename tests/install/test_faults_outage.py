"""A database outage under installs, reads and progress watchers (SPEC §4, issue 10).

The test owns its PostgreSQL (an embedded one started for this module, never the
shared server), stops it with ``pg_ctl stop -m fast`` while installs are in flight and
starts it again; the live server must settle every operation without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skillsvc.core import maintenance
from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from skillsvc.validation import Limits
from tests.helpers import expect_status, reason
from tests.install.conftest import (
    ArchiveServer,
    create_skill,
    events,
    install,
    install_url,
    wait_for_stage,
)
from tests.install.faults import OwnedPostgres, Trickle, operations, poll
from tests.packages import skill_archive

S = resources_pb2.InstallStage
HEARTBEAT = 0.5
TERMINAL = (
    resources_pb2.OPERATION_STATE_SUCCEEDED,
    resources_pb2.OPERATION_STATE_FAILED,
    resources_pb2.OPERATION_STATE_CANCELLED,
)


@pytest.fixture(scope="module")
async def owned_pg() -> AsyncIterator[OwnedPostgres]:
    pg = await OwnedPostgres.start()
    try:
        yield pg
    finally:
        await pg.close()


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as chan:
        reply = await health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
        return int(reply.status)


async def test_database_outage_settles_every_operation_on_the_live_server(
    make_app: Any,
    owned_pg: OwnedPostgres,
    archive_server: ArchiveServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app: App = await make_app(
        database_url=owned_pg.url,
        heartbeat_seconds=HEARTBEAT,
        url_allow_private=True,
    )
    archive_server.files["/o.tgz"] = skill_archive("outage", "1.0.0")
    async with grpc.aio.insecure_channel(app.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "outage")
        first = await install(stub, "outage", skill_archive("outage", "0.9.0"))
        assert (await events(stub, first.operation_id))[-1].state == TERMINAL[0]

        # In flight when the database goes: a download holding version 1.0.0 (claimed
        # at acceptance), and an upload half received.
        archive_server.gate.clear()
        downloading = await install_url(
            stub, "outage", archive_server.url("/o.tgz"), version="1.0.0"
        )
        await wait_for_stage(stub, downloading.operation_id, S.Value("INSTALL_STAGE_DOWNLOADING"))
        upload = Trickle(stub, "outage", skill_archive("outage", "1.1.0"))
        receiving = await poll(lambda: _receiving(stub), what="the upload to be accepted")
        watching = asyncio.Event()
        watcher = asyncio.ensure_future(_watch(stub, downloading.operation_id, watching))
        await asyncio.wait_for(watching.wait(), 10)

        await owned_pg.stop()
        await poll(lambda: _not_serving(app.address), what="health to follow the database down")
        # Reads fail cleanly (never INTERNAL) while the database is away.
        await expect_status(
            stub.GetOperation(
                skill_service_pb2.GetOperationRequest(operation_id=downloading.operation_id)
            ),
            grpc.StatusCode.UNAVAILABLE,
        )
        # Both installs now hit the outage: the download ends, the upload goes on.
        archive_server.gate.set()
        upload.release()
        outcome = await upload.outcome()
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() == grpc.StatusCode.UNAVAILABLE, outcome

        await owned_pg.restart()
        # Settled by the live server within a bounded wait (two heartbeats; the
        # bound here is generous for a loaded machine): no restart, no operator.
        for operation_id in (downloading.operation_id, receiving):
            final = await poll(
                lambda op=operation_id: _terminal(stub, op),
                timeout=20,
                what=f"operation {operation_id} to end",
            )
            assert final.state == resources_pb2.OPERATION_STATE_FAILED, final
            assert final.error.code == grpc.StatusCode.UNAVAILABLE.value[0], final.error
        seen = await asyncio.wait_for(watcher, 20)
        assert seen[-1].state == resources_pb2.OPERATION_STATE_FAILED
        package = await stub.GetPackage(
            skill_service_pb2.GetPackageRequest(skill_id="outage", version="1.0.0")
        )
        assert package.state == resources_pb2.PACKAGE_STATE_FAILED  # not INSTALLING
        # The version is free: installing it again succeeds, as do retries.
        again = await install_url(stub, "outage", archive_server.url("/o.tgz"), version="1.0.0")
        assert (await events(stub, again.operation_id))[-1].state == TERMINAL[0]
        # Retry works from the kept bytes if the upload had arrived whole before the
        # database went (the record of its end was what failed); otherwise there is
        # nothing to retry from, and it says so.
        retried = await _retry(stub, receiving)
        if isinstance(retried, grpc.aio.AioRpcError):
            assert retried.code() == grpc.StatusCode.FAILED_PRECONDITION, retried
            assert reason(retried) == "RETRY_BYTES_EXPIRED"
        else:
            assert (await events(stub, retried.operation_id))[-1].state == TERMINAL[0]
        assert await _health(app.address) == health_pb2.HealthCheckResponse.SERVING

    report = await maintenance.fsck(
        app.db, app.store, repair=False, limits=Limits(), stale_after=3 * HEARTBEAT
    )
    assert not report["orphan_directories"], report
    assert not report["orphan_blobs"], report
    staged = list((app.store.staging / app.installer.instance_id).iterdir())
    assert staged == [], staged
    # The operator saw the outage in the log: the listener went and came back, with
    # backoff; the health transitions are logged once each.
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(lvl == logging.WARNING and "LISTEN connection" in m for lvl, m in messages)
    assert any(
        lvl == logging.INFO and "LISTEN connection" in m and "restored" in m for lvl, m in messages
    )
    assert any(
        lvl == logging.WARNING and m.startswith("health: NOT_SERVING") for lvl, m in messages
    )
    assert app.listener.reconnects == 1


async def _retry(
    stub: skill_service_pb2_grpc.SkillServiceStub, operation_id: str
) -> resources_pb2.Operation | grpc.aio.AioRpcError:
    try:
        return await stub.Retry(skill_service_pb2.RetryRequest(operation_id=operation_id))
    except grpc.aio.AioRpcError as exc:
        return exc


async def _watch(
    stub: skill_service_pb2_grpc.SkillServiceStub, operation_id: str, started: asyncio.Event
) -> list[resources_pb2.InstallEvent]:
    seen = []
    call = stub.InstallProgress(skill_service_pb2.InstallProgressRequest(operation_id=operation_id))
    async for event in call:
        seen.append(event)
        started.set()
    return seen


async def _receiving(stub: skill_service_pb2_grpc.SkillServiceStub) -> str:
    for op in await operations(stub, "outage"):
        if op.stage == S.Value("INSTALL_STAGE_RECEIVING"):
            return str(op.operation_id)
    return ""


async def _not_serving(address: str) -> bool:
    return await _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING


async def _terminal(
    stub: skill_service_pb2_grpc.SkillServiceStub, operation_id: str
) -> resources_pb2.Operation | None:
    try:
        op = await stub.GetOperation(
            skill_service_pb2.GetOperationRequest(operation_id=operation_id)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return None
        raise
    return op if op.state in TERMINAL else None
