"""gRPC transport hygiene against the production server: what each setting does.

- a call past its deadline stops its work and leaves nothing behind (no operation left
  running, nothing in staging, no blob);
- ``SKILLSVC_MAX_CONCURRENT_STREAMS`` caps the calls one connection has open;
- ``SKILLSVC_MAX_CONNECTION_AGE_SECONDS`` (+ grace) ends old connections, even one
  busy with a stalled upload, so clients reconnect (and rebalance);
- ``SKILLSVC_MAX_MESSAGE_BYTES`` bounds a message;
- ``SKILLSVC_KEEPALIVE_MIN_PING_SECONDS`` sends GOAWAY to a client that pings too often.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from skillsvc.server import App, server_options
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status
from tests.install.conftest import create_skill, upload_spec
from tests.packages import skill_archive

C = grpc.StatusCode
Stub = skill_service_pb2_grpc.SkillServiceStub
TERMINAL = {resources_pb2.OPERATION_STATE_FAILED, resources_pb2.OPERATION_STATE_SUCCEEDED}


class stalled_upload:
    """The spec and a first chunk, then nothing until ``release`` (never, usually).

    An iterator class rather than an async generator: gRPC cannot ``aclose()`` a
    generator that is suspended in ``await``, and says so on stderr when a call ends.
    """

    def __init__(
        self, spec: skill_service_pb2.InstallSpec, first: bytes, release: asyncio.Event
    ) -> None:
        self._messages = [
            skill_service_pb2.InstallRequest(spec=spec),
            skill_service_pb2.InstallRequest(chunk=first),
        ]
        self._release = release

    def __aiter__(self) -> stalled_upload:
        return self

    async def __anext__(self) -> skill_service_pb2.InstallRequest:
        if self._messages:
            return self._messages.pop(0)
        await self._release.wait()
        raise StopAsyncIteration


def staged(store_root: Path) -> list[Path]:
    """What the processes' staging directories hold (trash aside)."""
    return [p for p in (store_root / "staging").glob("*/*") if p.name != ".trash"]


async def while_staged(call: Any, store_root: Path) -> Any:
    """Start ``call`` and wait (bounded) until its upload is being staged."""
    task = asyncio.ensure_future(call)
    async with asyncio.timeout(30):
        while not staged(store_root):
            assert not task.done(), "the call ended before anything was staged"
            await asyncio.sleep(0.02)
    return task


async def settled(db: asyncpg.Connection, store_root: Path) -> list[Any]:
    """Wait (bounded) until no operation runs and staging holds nothing; the rows."""
    async with asyncio.timeout(30):
        while True:
            rows = await db.fetch("SELECT state, error_code FROM skill_install_logs")
            busy = [r for r in rows if r["state"] in {"PENDING", "RUNNING"}]
            if not busy and not staged(store_root):
                return list(rows)
            await asyncio.sleep(0.05)


async def test_an_upload_past_its_deadline_leaves_nothing_behind(
    app: App, stub: Stub, db: asyncpg.Connection
) -> None:
    await create_skill(stub, "slow-skill")
    data = skill_archive("slow-skill", "1.0.0")
    never = asyncio.Event()
    call = stub.Install(
        stalled_upload(upload_spec("slow-skill", data, version="1.0.0"), data[:100], never),
        timeout=3.0,
    )
    # The upload is under way in staging when the deadline strikes.
    await expect_status(await while_staged(call, app.store.root), C.DEADLINE_EXCEEDED)
    rows = await settled(db, app.store.root)
    # Whatever was recorded is terminal; no version stays INSTALLING, no blob was kept
    # (the archive never arrived whole), and the version can be installed at once.
    assert rows, "the accepted upload is recorded"
    assert all(r["state"] in {"FAILED", "CANCELLED"} for r in rows), rows
    assert await db.fetchval("SELECT count(*) FROM skill_packages WHERE state <> 'FAILED'") == 0
    assert not any((app.store.root / "blobs" / "sha256").iterdir())
    assert not any((app.store.root / "packages").glob("slow-skill/*"))
    op = await stub.Install(_whole(upload_spec("slow-skill", data, version="1.0.0"), data))
    final = await _finish(stub, op.operation_id)
    assert final.state == resources_pb2.OPERATION_STATE_SUCCEEDED, final.error


class stalled_validation(stalled_upload):
    """A Validate stream that stalls after its first chunk."""

    def __init__(self, spec: skill_service_pb2.ValidateSpec, first: bytes) -> None:
        super().__init__(skill_service_pb2.InstallSpec(), first, asyncio.Event())
        self._messages = [
            skill_service_pb2.ValidateRequest(spec=spec),  # type: ignore[list-item]
            skill_service_pb2.ValidateRequest(chunk=first),  # type: ignore[list-item]
        ]


async def test_a_validation_past_its_deadline_leaves_nothing_behind(app: App, stub: Stub) -> None:
    data = skill_archive("checked", "1.0.0")
    spec = skill_service_pb2.ValidateSpec(
        skill_id="checked", upload=skill_service_pb2.UploadSource(size_bytes=len(data))
    )
    call = stub.Validate(stalled_validation(spec, data[:100]), timeout=3.0)
    await expect_status(await while_staged(call, app.store.root), C.DEADLINE_EXCEEDED)
    async with asyncio.timeout(30):
        while staged(app.store.root):
            await asyncio.sleep(0.05)
    assert not any((app.store.root / "blobs" / "sha256").iterdir())


async def _whole(
    spec: skill_service_pb2.InstallSpec, data: bytes
) -> AsyncIterator[skill_service_pb2.InstallRequest]:
    yield skill_service_pb2.InstallRequest(spec=spec)
    yield skill_service_pb2.InstallRequest(chunk=data)


async def _finish(stub: Stub, operation_id: str) -> resources_pb2.Operation:
    async for _event in stub.InstallProgress(
        skill_service_pb2.InstallProgressRequest(operation_id=operation_id), timeout=60
    ):
        pass
    return await stub.GetOperation(skill_service_pb2.GetOperationRequest(operation_id=operation_id))


async def test_streams_per_connection_are_capped(make_app: Any) -> None:
    app: App = await make_app(max_concurrent_streams=1)
    release = asyncio.Event()
    async with (
        grpc.aio.insecure_channel(app.address) as first,
        # Its own subchannel pool, or gRPC would share the first channel's connection.
        grpc.aio.insecure_channel(
            app.address, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as second,
    ):
        stub = Stub(first)
        await create_skill(stub, "capped")
        data = skill_archive("capped", "1.0.0")
        upload = stub.Install(stalled_upload(upload_spec("capped", data), data[:10], release))
        await asyncio.sleep(0)  # the upload's stream is opened before the next call
        listing = skill_service_pb2.ListSkillDefinitionsRequest()
        # The connection's one stream is taken: the call waits in the client, here
        # until its deadline; another connection is served at once.
        await expect_status(stub.ListSkillDefinitions(listing, timeout=1.0), C.DEADLINE_EXCEEDED)
        await Stub(second).ListSkillDefinitions(listing, timeout=10)
        upload.cancel()
        release.set()


async def test_old_connections_are_closed_even_while_busy(
    make_app: Any, db: asyncpg.Connection
) -> None:
    app: App = await make_app(max_connection_age_seconds=0.5, max_connection_age_grace_seconds=0.5)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = Stub(channel)
        await create_skill(stub, "aged")
        data = skill_archive("aged", "1.0.0")
        never = asyncio.Event()
        call = stub.Install(stalled_upload(upload_spec("aged", data), data[:10], never))
        # No deadline: only the connection's age can end this stalled upload.
        async with asyncio.timeout(30):
            error = await expect_status(call, C.UNAVAILABLE)
        assert error.code() == C.UNAVAILABLE
        # The channel reconnects by itself for the next call.
        await stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest(), timeout=10)
    rows = await settled(db, app.store.root)
    assert rows, "the accepted upload is recorded"
    assert all(r["state"] in {"FAILED", "CANCELLED"} for r in rows), rows


async def test_a_message_over_the_limit_is_resource_exhausted(make_app: Any) -> None:
    app: App = await make_app(max_message_bytes=64 * 1024)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = Stub(channel)
        await create_skill(stub, "bulky")
        data = skill_archive("bulky", "1.0.0") + b"\0" * (128 * 1024)
        call = stub.Install(_whole(upload_spec("bulky", data), data), timeout=30)
        error = await expect_status(call, C.RESOURCE_EXHAUSTED)
        assert "message larger than max" in (error.details() or "")


async def test_a_client_pinging_too_often_is_sent_away(make_app: Any) -> None:
    # (gRPC's own default would also refuse 50 ms pings; what the setting changes,
    # the minimum, is checked in test_server_options_come_from_the_settings.)
    app: App = await make_app(keepalive_min_ping_seconds=60)
    pinging = [
        ("grpc.keepalive_time_ms", 50),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(app.address, options=pinging) as channel:
        stub = Stub(channel)
        await create_skill(stub, "pinger")
        data = skill_archive("pinger", "1.0.0")
        call = stub.Install(stalled_upload(upload_spec("pinger", data), data[:10], asyncio.Event()))
        # Past the allowed rate the server answers GOAWAY (ENHANCE_YOUR_CALM,
        # "too_many_pings") and the call ends with its connection.
        async with asyncio.timeout(30):
            error = await expect_status(call, C.UNAVAILABLE)
        assert error.details() == "Too many pings"


def test_server_options_come_from_the_settings(settings: Any) -> None:
    options = dict(server_options(settings))
    assert options["grpc.max_receive_message_length"] == settings.max_message_bytes
    assert options["grpc.max_concurrent_streams"] == settings.max_concurrent_streams
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_connection_age_ms"] == 600_000
    assert options["grpc.max_connection_age_grace_ms"] == 60_000
    forever = dict(server_options(dataclasses.replace(settings, max_connection_age_seconds=0)))
    assert "grpc.max_connection_age_ms" not in forever
