"""WatchSkills against the production server and a real PostgreSQL: what is streamed,
resuming with ``since``, the retention, writers other than the RPC, and the shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal

import asyncpg
import grpc
from google.protobuf import field_mask_pb2

from skillsvc.config import Settings
from skillsvc.core.models import SkillEvent
from skillsvc.core.watch import Synced, WatchHub, WatchSettings
from skillsvc.server import App, build_server
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status, reason
from tests.install.conftest import create_skill, install_and_wait
from tests.packages import skill_archive
from tests.watch.conftest import Stub, brief, watching

pb = skill_service_pb2


async def _update(stub: Stub, skill_id: str, description: str) -> None:
    await stub.UpdateSkillDefinition(
        pb.UpdateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id, description=description),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    )


async def _installed(stub: Stub, skill_id: str, version: str) -> None:
    final, _ = await install_and_wait(stub, skill_id, skill_archive(skill_id, version))
    assert final.state == resources_pb2.OPERATION_STATE_SUCCEEDED, final.error


async def test_every_kind_of_change_is_streamed_in_order(stub: Stub) -> None:
    async with watching(stub) as watch:
        head = await watch.synced()
        await create_skill(stub, "pdf-tools")
        await _update(stub, "pdf-tools", "reads PDFs")
        await _installed(stub, "pdf-tools", "1.0.0")
        await _installed(stub, "pdf-tools", "1.1.0")
        await stub.Rollback(pb.RollbackRequest(skill_id="pdf-tools", target_version="1.0.0"))
        await stub.DeletePackage(pb.DeletePackageRequest(skill_id="pdf-tools", version="1.1.0"))
        await stub.DeleteSkillDefinition(
            pb.DeleteSkillDefinitionRequest(skill_id="pdf-tools", force=True)
        )
        events = await watch.count(11)
    assert [brief(e) for e in events[:8]] == [
        ("DEFINITION_CREATED", "pdf-tools", "", "", ""),
        ("DEFINITION_UPDATED", "pdf-tools", "", "", ""),
        ("PACKAGE_READY", "pdf-tools", "1.0.0", "", ""),
        ("CURRENT_CHANGED", "pdf-tools", "1.0.0", "", "1.0.0"),
        ("PACKAGE_READY", "pdf-tools", "1.1.0", "", ""),
        ("CURRENT_CHANGED", "pdf-tools", "1.1.0", "1.0.0", "1.1.0"),
        ("CURRENT_CHANGED", "pdf-tools", "1.0.0", "1.1.0", "1.0.0"),
        ("PACKAGE_DELETED", "pdf-tools", "1.1.0", "", ""),
    ]
    # The forced delete clears the current version and removes the packages in one
    # statement (in whichever order PostgreSQL runs its parts), then the definition.
    assert sorted(brief(e) for e in events[8:10]) == [
        ("CURRENT_CHANGED", "pdf-tools", "", "1.0.0", ""),
        ("PACKAGE_DELETED", "pdf-tools", "1.0.0", "", ""),
    ]
    assert brief(events[10]) == ("DEFINITION_DELETED", "pdf-tools", "", "", "")
    # One watcher that sees everything: the positions are dense, after SYNCED's.
    assert [e.seq for e in events] == list(range(head + 1, head + 12))
    assert all(e.time.seconds > 0 and e.tenant == "" for e in events)


async def _first_error(call: object) -> grpc.aio.AioRpcError:
    """Read ``call`` (a WatchSkills stream) until it fails; its error."""
    try:
        async for _ in call:  # type: ignore[attr-defined]
            pass
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the stream ended without an error")


def _watch_request(since: int | None = None, *skills: str) -> pb.WatchSkillsRequest:
    request = pb.WatchSkillsRequest(skill_ids=list(skills))
    if since is not None:
        request.since = since
    return request


async def test_a_watcher_resumes_with_since_without_losing_or_repeating(stub: Stub) -> None:
    async with watching(stub) as first:
        await first.synced()
        await create_skill(stub, "alpha")
        await _update(stub, "alpha", "one")
        seen = await first.count(2)
    last = seen[-1].seq
    # Changes made while nobody watches.
    await _update(stub, "alpha", "two")
    await create_skill(stub, "beta")
    async with watching(stub, since=last) as second:
        synced = await second.synced()
        await _update(stub, "beta", "three")
        events = await second.count(3)
    assert [brief(e)[:2] for e in events] == [
        ("DEFINITION_UPDATED", "alpha"),
        ("DEFINITION_CREATED", "beta"),
        ("DEFINITION_UPDATED", "beta"),
    ]
    assert [e.seq for e in events] == [last + 1, last + 2, last + 3]
    # Replay, then SYNCED at the head of the replay, then the live change.
    assert [e.seq for e in second.events] == [last + 1, last + 2, last + 2, last + 3]
    assert synced == last + 2
    # Resuming from SYNCED's seq replays nothing.
    async with watching(stub, since=synced) as third:
        assert await third.synced() == last + 3
    assert [e.seq for e in third.events] == [last + 3, last + 3]


async def test_since_outside_the_retained_history_is_out_of_range(
    settings: Settings, db: asyncpg.Connection
) -> None:
    app = await build_server(dataclasses.replace(settings, watch_retention_seconds=0.5))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = skill_service_pb2_grpc.SkillServiceStub(channel)
            await create_skill(stub, "old-news")
            await _update(stub, "old-news", "older")
            # The health loop prunes what is older than the retention.
            async with asyncio.timeout(20):
                while await db.fetchval("SELECT count(*) FROM skill_events"):
                    await asyncio.sleep(0.05)
            head = await db.fetchval("SELECT seq FROM skill_event_head")
            assert head == 2
            error = await _first_error(stub.WatchSkills(_watch_request(0)))
            assert error.code() == grpc.StatusCode.OUT_OF_RANGE, error.details()
            assert reason(error) == "HISTORY_PRUNED"
            error = await _first_error(stub.WatchSkills(_watch_request(1)))
            assert reason(error) == "HISTORY_PRUNED"
            # Ahead of the log (a since from another database, say).
            error = await _first_error(stub.WatchSkills(_watch_request(head + 1)))
            assert error.code() == grpc.StatusCode.OUT_OF_RANGE
            assert reason(error) == "SINCE_UNKNOWN"
            # Nothing after the head was pruned: resuming from it loses nothing.
            async with watching(stub, since=head) as watch:
                assert await watch.synced() == head
                await _update(stub, "old-news", "new")
                assert [e.seq for e in await watch.count(1)] == [head + 1]
            for bad in (_watch_request(-1), _watch_request(None, "Not-An-Id")):
                await expect_status(
                    _first_error_raising(stub.WatchSkills(bad)), grpc.StatusCode.INVALID_ARGUMENT
                )
    finally:
        await app.stop(0)


async def _first_error_raising(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


async def test_writes_by_another_process_and_by_plain_sql_reach_the_watcher(
    stub: Stub, app: App, db: asyncpg.Connection, db_url: str, serve: object, tmp_path: object
) -> None:
    other = await serve(  # type: ignore[operator]
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_DATA_DIR=str(tmp_path / "other"),  # type: ignore[operator]
        SKILLSVC_LISTEN_ADDR="127.0.0.1:0",
    )
    await other.wait_serving()
    async with grpc.aio.insecure_channel(other.address) as channel:
        remote = skill_service_pb2_grpc.SkillServiceStub(channel)
        async with watching(stub) as here, watching(remote) as there:
            await here.synced()
            await there.synced()
            await create_skill(remote, "made-there")
            await create_skill(stub, "made-here")
            await db.execute(
                "UPDATE skill_definitions SET description = 'by hand' WHERE skill_id = $1",
                "made-there",
            )
            expected = [
                ("DEFINITION_CREATED", "made-there"),
                ("DEFINITION_CREATED", "made-here"),
                ("DEFINITION_UPDATED", "made-there"),
            ]
            assert [brief(e)[:2] for e in await here.count(3)] == expected
            assert [brief(e)[:2] for e in await there.count(3)] == expected
            assert [e.seq for e in here.changes] == [e.seq for e in there.changes]
            first = here.changes[0].seq
        # A position from one replica resumes on the other.
        async with watching(remote, since=first) as resumed:
            assert [brief(e)[:2] for e in await resumed.count(2)] == expected[1:]


async def test_a_transaction_that_commits_late_is_not_skipped(
    stub: Stub, db: asyncpg.Connection, db_url: str
) -> None:
    # Writers take their event ids in one order and commit in the reverse order: a
    # reader handing out "seq > last" by insertion order would skip the early ones.
    conns = [await asyncpg.connect(db_url) for _ in range(6)]
    try:
        async with watching(stub) as watch:
            start = await watch.synced()
            transactions = []
            for i, conn in enumerate(conns):
                tx = conn.transaction()
                await tx.start()
                await conn.execute(
                    "INSERT INTO skill_definitions (skill_id, public) VALUES ($1, true)",
                    f"late-{i}",
                )
                transactions.append(tx)
            for i, tx in reversed(list(enumerate(transactions))):
                await tx.commit()
                # The watcher has passed this commit before the earlier writer commits.
                await watch.until(
                    lambda w, name=f"late-{i}": any(e.skill_id == name for e in w.events)
                )
            events = await watch.count(6)
        assert sorted(e.skill_id for e in events) == [f"late-{i}" for i in range(6)]
        assert [e.skill_id for e in events] == [f"late-{i}" for i in reversed(range(6))]
        assert [e.seq for e in events] == list(range(start + 1, start + 7))
        rows = await db.fetch("SELECT id, seq FROM skill_events ORDER BY id")
        assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)
        # Resuming from any of them gives exactly what followed it.
        for k, event in enumerate(events):
            async with watching(stub, since=event.seq) as resumed:
                await resumed.synced()
            assert [e.skill_id for e in resumed.changes] == [e.skill_id for e in events[k + 1 :]]
    finally:
        for conn in conns:
            await conn.close()


async def test_watchers_of_one_process_share_each_read(stub: Stub, app: App) -> None:
    async with contextlib.AsyncExitStack() as stack:
        watches = [await stack.enter_async_context(watching(stub)) for _ in range(8)]
        for watch in watches:
            await watch.synced()
        reads = app.watch.reads
        for i in range(3):
            await create_skill(stub, f"shared-{i}")
            for watch in watches:
                await watch.count(i + 1)
        assert app.watch.reads - reads <= 3
        for watch in watches:
            assert [e.skill_id for e in watch.changes] == ["shared-0", "shared-1", "shared-2"]


async def test_a_slow_watcher_holds_a_bounded_queue_and_reads_the_rest_from_the_table(
    app: App, db: asyncpg.Connection
) -> None:
    hub = app.watch
    hub.settings = dataclasses.replace(hub.settings, max_queued=3, page_size=2)
    stream = hub.watch(None, [], None)
    try:
        synced = await anext(stream)
        # The watcher reads nothing while ten changes are published and fanned out.
        for i in range(10):
            await db.execute(
                "INSERT INTO skill_definitions (skill_id, public) VALUES ($1, true)", f"slow-{i}"
            )
        async with asyncio.timeout(20):
            while hub.position != synced.seq + 10:  # type: ignore[union-attr]
                await asyncio.sleep(0.02)
        assert hub.backlog() == [(0, True)]
        events = [await anext(stream) for _ in range(10)]
        assert [e.skill_id for e in events] == [f"slow-{i}" for i in range(10)]  # type: ignore[union-attr]
    finally:
        await stream.aclose()


async def test_events_published_by_the_hub_starting_reach_its_first_watcher(
    app: App, db: asyncpg.Connection
) -> None:
    # A hub of its own, not started: the test decides when it reads.
    hub = WatchHub(app.db, WatchSettings(retention_seconds=3600))
    stream = hub.watch(None, [], None)
    try:
        synced = await anext(stream)
        assert isinstance(synced, Synced)
        # Committed after the watcher's start but before the hub's first round, which
        # numbers it and starts reading from the head beyond it.
        await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('early', true)")
        await hub.poll()
        assert hub.position == synced.seq + 1
        async with asyncio.timeout(10):
            event = await anext(stream)
        assert isinstance(event, SkillEvent)
        assert (event.skill_id, event.seq) == ("early", synced.seq + 1)
    finally:
        await stream.aclose()


async def test_a_lost_listen_connection_loses_no_event(
    stub: Stub, app: App, db: asyncpg.Connection
) -> None:
    async with watching(stub) as watch:
        await watch.synced()
        reconnects = app.listener.reconnects
        await db.execute("SELECT pg_terminate_backend($1)", app.listener.backend_pid)
        # Made while the listener is away: its NOTIFY is lost; the event is not.
        await db.execute(
            "INSERT INTO skill_definitions (skill_id, public) VALUES ('unheard', true)"
        )
        events = await watch.count(1)
        assert [brief(e)[:2] for e in events] == [("DEFINITION_CREATED", "unheard")]
        async with asyncio.timeout(20):
            while app.listener.reconnects == reconnects:
                await asyncio.sleep(0.05)
        await create_skill(stub, "heard")
        assert [e.skill_id for e in await watch.count(2)] == ["unheard", "heard"]


async def test_sigterm_ends_the_stream_with_unavailable(
    db_url: str, serve: object, tmp_path: object
) -> None:
    served = await serve(  # type: ignore[operator]
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_DATA_DIR=str(tmp_path / "sigterm"),  # type: ignore[operator]
        SKILLSVC_SHUTDOWN_GRACE_SECONDS="60",
    )
    await served.wait_serving()
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        async with watching(stub) as watch:
            await watch.synced()
            served.proc.send_signal(signal.SIGTERM)
            # Well before the 60 s grace would cut it off.
            error = await watch.ending(timeout=30)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(error) == "SHUTTING_DOWN"
    async with asyncio.timeout(30):
        assert await served.proc.wait() == 0


async def test_a_skill_going_private_is_dropped_from_what_a_watcher_still_holds(
    app: App, db: asyncpg.Connection
) -> None:
    # A watcher of tenant acme that reads nothing while another tenant's public skill
    # changes: the hub has queued those events for it. The skill then goes private:
    # what the watcher still holds of it must not be sent any more.
    hub = app.watch
    stream = hub.watch("acme", [], None)
    try:
        synced = await anext(stream)
        assert isinstance(synced, Synced)
        # One change read first, so the watcher has caught up with the hub's start.
        await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('warm', true)")
        async with asyncio.timeout(20):
            while hub.position != synced.seq + 1:
                await asyncio.sleep(0.02)
            assert (await anext(stream)).skill_id == "warm"  # type: ignore[union-attr]
        await db.execute(
            "INSERT INTO skill_definitions (skill_id, tenant, public) VALUES ('brief', 'globex', true)"
        )
        await db.execute("UPDATE skill_definitions SET description = 'd' WHERE skill_id = 'brief'")
        async with asyncio.timeout(20):
            while hub.position != synced.seq + 3:
                await asyncio.sleep(0.02)
        assert hub.backlog() == [(2, False)]
        await db.execute("UPDATE skill_definitions SET public = false WHERE skill_id = 'brief'")
        await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('fence', true)")
        async with asyncio.timeout(20):
            while hub.position != synced.seq + 5:
                await asyncio.sleep(0.02)
            # The hub read that it went private: the watcher dropped what it held.
            assert hub.backlog() == [(0, True)]
            events = [await anext(stream) for _ in range(2)]
        assert [(e.type.value, e.skill_id, e.seq) for e in events] == [  # type: ignore[union-attr]
            ("DEFINITION_UPDATED", "brief", synced.seq + 4),
            ("DEFINITION_CREATED", "fence", synced.seq + 5),
        ]
    finally:
        await stream.aclose()


async def test_an_idle_watcher_gets_its_position_before_the_history_is_pruned(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # A watcher for one quiet skill while others change: its position moves past
    # events it does not see. Without a marker it could only resume from its last
    # visible event, which pruning removes: OUT_OF_RANGE though it lost nothing.
    app = await build_server(dataclasses.replace(settings, watch_retention_seconds=2.0))
    await app.start()
    try:
        assert app.watch.settings.marker_interval == 0.5
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = skill_service_pb2_grpc.SkillServiceStub(channel)
            async with watching(stub, skill_ids=("quiet",)) as watch:
                start = await watch.synced()
                for i in range(3):
                    await create_skill(stub, f"busy-{i}")
                # A SYNCED past them, though none of them is shown.
                await watch.until(lambda w: w.events[-1].seq == start + 3, timeout=10)
                assert {brief(e)[0] for e in watch.events} == {"SYNCED"}
                marker = watch.events[-1].seq
            # Everything up to the marker is pruned (nothing after it was): resuming
            # from it loses nothing.
            async with asyncio.timeout(20):
                while await db.fetchval("SELECT count(*) FROM skill_events"):
                    await asyncio.sleep(0.05)
            async with watching(stub, since=marker, skill_ids=("quiet",)) as resumed:
                assert await resumed.synced() == marker
                await create_skill(stub, "quiet")
                assert [e.seq for e in await resumed.count(1)] == [marker + 1]
    finally:
        await app.stop(0)
