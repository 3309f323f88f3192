"""Installs racing, queueing, watched from another server, cancelled and URL-sourced."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import asyncpg
import grpc

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status, reason
from tests.install.conftest import (
    ArchiveServer,
    Stub,
    create_skill,
    events,
    install,
    install_url,
    upload_spec,
    wait_for_stage,
)
from tests.packages import skill_archive

OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED
S = resources_pb2.InstallStage


async def test_url_install_end_to_end(make_app, archive_server: ArchiveServer) -> None:  # type: ignore[no-untyped-def]
    app: App = await make_app(url_allow_private=True)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "fetched")
        archive_server.files["/fetched.tgz"] = skill_archive("fetched", "3.1.4")
        op = await install_url(stub, "fetched", archive_server.url("/fetched.tgz"))
        seen = await events(stub, op.operation_id)
        assert seen[-1].state == OK, seen[-1]
        package = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id="fetched"))
        assert package.version == "3.1.4"
        assert package.source_type == resources_pb2.SOURCE_TYPE_URL
        assert package.source_uri == archive_server.url("/fetched.tgz")
        # A 404 fails the operation with the HTTP status in the message.
        missing = await install_url(stub, "fetched", archive_server.url("/missing.tgz"))
        seen = await events(stub, missing.operation_id)
        assert seen[-1].state == FAILED
        assert "404" in seen[-1].error.message


async def test_private_url_is_refused_by_default(stub: Stub, archive_server: ArchiveServer) -> None:
    await create_skill(stub, "ssrf")
    archive_server.files["/x.tgz"] = skill_archive("ssrf")
    op = await install_url(stub, "ssrf", archive_server.url("/x.tgz"))
    seen = await events(stub, op.operation_id)
    assert seen[-1].state == FAILED
    assert seen[-1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert archive_server.requests == [], "a private address must not be contacted"


async def test_same_version_raced_one_proceeds_the_other_is_aborted(stub: Stub) -> None:
    await create_skill(stub, "raced")
    data = skill_archive("raced", "1.0.0")
    hold = asyncio.Event()

    async def slow_upload() -> AsyncIterator[skill_service_pb2.InstallRequest]:
        yield skill_service_pb2.InstallRequest(spec=upload_spec("raced", data, version="1.0.0"))
        yield skill_service_pb2.InstallRequest(chunk=data[:10])
        await hold.wait()
        yield skill_service_pb2.InstallRequest(chunk=data[10:])

    first = asyncio.ensure_future(stub.Install(slow_upload()))
    # Wait until the first install has reserved the version.
    for _ in range(200):
        listed = await stub.ListPackages(skill_service_pb2.ListPackagesRequest(skill_id="raced"))
        if listed.packages:
            break
        await asyncio.sleep(0.01)
    err = await expect_status(
        install(stub, "raced", data, version="1.0.0"), grpc.StatusCode.ABORTED
    )
    assert reason(err) == "CONCURRENT_INSTALL"
    hold.set()
    op = await first
    seen = await events(stub, op.operation_id)
    assert seen[-1].state == OK
    log = await stub.ListOperations(skill_service_pb2.ListOperationsRequest(skill_id="raced"))
    states = sorted(resources_pb2.OperationState.Name(o.state) for o in log.operations)
    assert states == ["OPERATION_STATE_FAILED", "OPERATION_STATE_SUCCEEDED"]
    aborted = next(o for o in log.operations if o.state == FAILED)
    assert aborted.error.code == grpc.StatusCode.ABORTED.value[0]


async def test_many_concurrent_callers_on_one_skill(make_app, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    """60 installs of one skill at once, default concurrency: all land, serialised."""
    # 60 versions of one skill need more than the default quota of 50.
    app: App = await make_app(max_versions_per_skill=100)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "busy")
        archives = [skill_archive("busy", f"1.0.{i}") for i in range(60)]
        ops = await asyncio.gather(*(install(stub, "busy", a) for a in archives))
        finals = await asyncio.gather(*(events(stub, op.operation_id) for op in ops))
    assert all(f[-1].state == OK for f in finals), [
        f[-1].error for f in finals if f[-1].state != OK
    ]
    assert await db.fetchval("SELECT count(*) FROM skill_packages WHERE state = 'READY'") == 60
    # Each activation recorded the version that was current before it: one chain.
    rows = await db.fetch(
        "SELECT version, previous_version FROM skill_activations ORDER BY activation_id"
    )
    assert len(rows) == 60
    assert rows[0]["previous_version"] is None
    assert all(rows[i]["previous_version"] == rows[i - 1]["version"] for i in range(1, 60))
    current = await db.fetchval(
        "SELECT current_version FROM skill_definitions WHERE skill_id = 'busy'"
    )
    assert current == rows[-1]["version"]


async def test_concurrency_limit_queues_installs(make_app, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    app: App = await make_app(max_concurrent_installs=5, max_versions_per_skill=100)
    running: set[str] = set()
    peak = 0
    queued_seen = 0
    active = {"VERIFYING", "EXTRACTING", "VALIDATING", "COMMITTING", "ACTIVATING", "DOWNLOADING"}

    def on_change(*args: object) -> None:
        nonlocal peak, queued_seen
        change = json.loads(str(args[3]))
        op = change["operation_id"]
        if change["stage"] in active:
            running.add(op)
        else:
            running.discard(op)
        if change["stage"] == "QUEUED":
            queued_seen += 1
        peak = max(peak, len(running))

    await db.add_listener("skillsvc_progress", on_change)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "limited")
        ops = await asyncio.gather(
            *(install(stub, "limited", skill_archive("limited", f"2.0.{i}")) for i in range(60))
        )
        finals = await asyncio.gather(*(events(stub, op.operation_id) for op in ops))
    await db.execute("SELECT 1")
    assert all(f[-1].state == OK for f in finals)
    assert queued_seen == 60
    assert 1 <= peak <= 5


async def test_queue_limit_is_resource_exhausted(make_app, archive_server: ArchiveServer) -> None:  # type: ignore[no-untyped-def]
    app: App = await make_app(
        max_concurrent_installs=1, max_queued_installs=1, url_allow_private=True
    )
    archive_server.gate.clear()  # downloads hang half-way until released
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "queued")
        for i in range(3):
            archive_server.files[f"/{i}.tgz"] = skill_archive("queued", f"0.0.{i}")
        running = await install_url(stub, "queued", archive_server.url("/0.tgz"))
        await wait_for_stage(stub, running.operation_id, S.Value("INSTALL_STAGE_DOWNLOADING"))
        waiting = await install_url(stub, "queued", archive_server.url("/1.tgz"))
        err = await expect_status(
            install_url(stub, "queued", archive_server.url("/2.tgz")),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert reason(err) == "INSTALL_QUEUE_FULL"
        archive_server.gate.set()
        for op in (running, waiting):
            assert (await events(stub, op.operation_id))[-1].state == OK


async def test_watcher_on_a_second_server_sees_every_change(
    app: App, serve, db_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # Another `skillsvc serve` process on the same database (its own store and LISTEN).
    other = await serve(SKILLSVC_DATABASE_URL=db_url, SKILLSVC_DATA_DIR=str(tmp_path / "other"))
    await other.wait_serving()
    async with (
        grpc.aio.insecure_channel(app.address) as first,
        grpc.aio.insecure_channel(other.address) as second,
    ):
        stub = skill_service_pb2_grpc.SkillServiceStub(first)
        remote = skill_service_pb2_grpc.SkillServiceStub(second)
        await create_skill(stub, "watched")
        data = skill_archive("watched", "1.0.0")
        hold = asyncio.Event()

        async def held() -> AsyncIterator[skill_service_pb2.InstallRequest]:
            yield skill_service_pb2.InstallRequest(spec=upload_spec("watched", data))
            await hold.wait()
            yield skill_service_pb2.InstallRequest(chunk=data)

        call = stub.Install(held())
        # Find the operation while its upload is still open, then watch it elsewhere.
        for _ in range(200):
            log = await remote.ListOperations(
                skill_service_pb2.ListOperationsRequest(skill_id="watched")
            )
            if log.operations:
                break
            await asyncio.sleep(0.01)
        op_id = log.operations[0].operation_id
        watcher = asyncio.create_task(events(remote, op_id))
        await asyncio.sleep(0.2)
        hold.set()
        await call
        seen = await watcher
    stages = [S.Name(e.stage).removeprefix("INSTALL_STAGE_") for e in seen]
    assert stages[0] == "RECEIVING"
    assert stages[-1] == "DONE"
    assert {"QUEUED", "EXTRACTING", "COMMITTING"} <= set(stages)


async def test_cancelled_upload_leaves_nothing(
    app: App, stub: Stub, db: asyncpg.Connection
) -> None:
    await create_skill(stub, "cancel")
    data = skill_archive("cancel", "1.0.0")
    sent = asyncio.Event()

    async def abandoned() -> AsyncIterator[skill_service_pb2.InstallRequest]:
        yield skill_service_pb2.InstallRequest(spec=upload_spec("cancel", data, version="1.0.0"))
        yield skill_service_pb2.InstallRequest(chunk=data[:100])
        sent.set()
        await asyncio.sleep(3600)

    call = stub.Install(abandoned())
    await sent.wait()
    for _ in range(200):
        if await db.fetchval("SELECT bytes_done FROM skill_install_logs") is not None:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    call.cancel()
    for _ in range(300):
        state = await db.fetchval("SELECT state FROM skill_install_logs")
        if state == "CANCELLED":
            break
        await asyncio.sleep(0.02)
    row = await db.fetchrow("SELECT state, error_code, error_reason FROM skill_install_logs")
    assert (row["state"], row["error_code"], row["error_reason"]) == (
        "CANCELLED",
        "CANCELLED",
        "CANCELLED",
    )
    assert await db.fetchval("SELECT state FROM skill_packages") == "FAILED"
    assert not any((app.store.root / "staging").glob("*/*"))
    assert not (app.store.root / "packages" / "cancel" / "1.0.0").exists()


async def test_byte_progress_is_throttled(stub: Stub, db: asyncpg.Connection) -> None:
    await create_skill(stub, "chunky")
    data = skill_archive("chunky", "1.0.0", extra={"blob.bin": os.urandom(4 * 1024 * 1024)})
    writes: list[int] = []
    await db.add_listener("skillsvc_progress", lambda *a: writes.append(1))
    spec = upload_spec("chunky", data)

    async def tiny_chunks() -> AsyncIterator[skill_service_pb2.InstallRequest]:
        yield skill_service_pb2.InstallRequest(spec=spec)
        for start in range(0, len(data), 1024):
            yield skill_service_pb2.InstallRequest(chunk=data[start : start + 1024])

    op = await stub.Install(tiny_chunks())
    await events(stub, op.operation_id)
    await db.execute("SELECT 1")
    chunks = len(data) // 1024
    assert chunks > 30
    assert len(writes) < 30, f"{len(writes)} progress writes for {chunks} chunks"
