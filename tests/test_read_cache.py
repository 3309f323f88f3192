"""The read cache of GetSkillDefinition and GetPackage: invalidation, replicas, bounds.

Two production servers share one database here, as two replicas would. A cached value
is proven cached by the cache's hit counter, so each test would fail if the cache
served it stale.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from skillsvc.core.cache import ReadCache
from skillsvc.core.models import Definition
from skillsvc.db import CATALOG_CHANNEL, PROGRESS_CHANNEL
from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status
from tests.install.conftest import create_skill, install_and_wait
from tests.packages import skill_archive

Stub = skill_service_pb2_grpc.SkillServiceStub
pb = skill_service_pb2

DEADLINE_SECONDS = 10.0
"""How long a replica may take to see another's write (normally milliseconds)."""


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds, failing after the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await check():
        assert time.monotonic() < deadline, "the change was not seen within the deadline"
        await asyncio.sleep(0.02)


async def _get_definition(stub: Stub, skill_id: str) -> resources_pb2.SkillDefinition:
    return await stub.GetSkillDefinition(pb.GetSkillDefinitionRequest(skill_id=skill_id))


async def _get_package(stub: Stub, skill_id: str, version: str = "") -> resources_pb2.SkillPackage:
    return await stub.GetPackage(pb.GetPackageRequest(skill_id=skill_id, version=version))


async def _rename(stub: Stub, skill_id: str, name: str) -> None:
    await stub.UpdateSkillDefinition(
        pb.UpdateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id, display_name=name),
            update_mask={"paths": ["display_name"]},
        )
    )


async def _settle(app: App, db: asyncpg.Connection) -> None:
    """Wait until ``app`` has heard every catalog notification committed so far.

    Notifications reach a listener in commit order, so once a marker sent now has
    arrived, so has every earlier one (which would otherwise drop entries later).
    """
    marker = f"~marker-{uuid.uuid4()}"
    await db.execute("SELECT pg_notify($1, $2)", CATALOG_CHANNEL, marker)

    async def heard() -> bool:
        return app.cache.last_change == marker

    await _eventually(heard)


async def _cached_read(app: App, read: Awaitable[Any]) -> Any:
    """``read``'s result (or its RPC error), asserting that the cache answered it."""
    hits = app.cache.hits
    try:
        result = await read
    except grpc.aio.AioRpcError as exc:
        result = exc
    assert app.cache.hits > hits, "expected a cache hit"
    return result


@pytest.fixture
async def replica(make_app: Callable[..., Awaitable[App]], tmp_path: Path) -> App:
    """A second server on the same database, with its own data directory."""
    return await make_app(data_dir=tmp_path / "replica")


@pytest.fixture
async def replica_stub(replica: App) -> AsyncIterator[Stub]:
    """A client of the second server."""
    async with grpc.aio.insecure_channel(replica.address) as chan:
        yield Stub(chan)


async def test_a_write_on_one_replica_is_seen_by_the_other(
    app: App, stub: Stub, replica: App, replica_stub: Stub, db: asyncpg.Connection
) -> None:
    await create_skill(stub, "pdf-tools", display_name="one")
    await _settle(replica, db)
    # The replica caches the definition, and an absent version, before the writes.
    await _get_definition(replica_stub, "pdf-tools")
    assert (await _cached_read(replica, _get_definition(replica_stub, "pdf-tools"))).display_name
    await expect_status(_get_package(replica_stub, "pdf-tools", "1.0.0"), grpc.StatusCode.NOT_FOUND)
    missing = await _cached_read(replica, _get_package(replica_stub, "pdf-tools", "1.0.0"))
    assert missing.code() is grpc.StatusCode.NOT_FOUND

    await _rename(stub, "pdf-tools", "two")

    async def renamed() -> bool:
        return (await _get_definition(replica_stub, "pdf-tools")).display_name == "two"

    await _eventually(renamed)

    # A package becoming READY and current on one replica (its own NOTIFY carries it).
    for version in ("1.0.0", "1.1.0"):
        final, _ = await install_and_wait(
            stub, "pdf-tools", skill_archive("pdf-tools", version), version=version
        )
        assert final.state == resources_pb2.OPERATION_STATE_SUCCEEDED, final.error

    async def current_is(version: str) -> bool:
        try:
            return (await _get_package(replica_stub, "pdf-tools")).version == version
        except grpc.aio.AioRpcError:
            return False

    await _eventually(lambda: current_is("1.1.0"))
    await _settle(replica, db)
    await _get_package(replica_stub, "pdf-tools")
    assert (await _cached_read(replica, _get_package(replica_stub, "pdf-tools"))).current

    # The current version moving back (a rollback) and a package deleted.
    await stub.Rollback(pb.RollbackRequest(skill_id="pdf-tools", target_version="1.0.0"))
    await _eventually(lambda: current_is("1.0.0"))
    await _settle(replica, db)
    await _get_package(replica_stub, "pdf-tools", "1.1.0")
    await _cached_read(replica, _get_package(replica_stub, "pdf-tools", "1.1.0"))
    await stub.DeletePackage(pb.DeletePackageRequest(skill_id="pdf-tools", version="1.1.0"))

    async def deleted() -> bool:
        try:
            await _get_package(replica_stub, "pdf-tools", "1.1.0")
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.NOT_FOUND
        return False

    await _eventually(deleted)

    # The definition deleted (with its packages).
    await _settle(replica, db)
    await _get_definition(replica_stub, "pdf-tools")
    await _cached_read(replica, _get_definition(replica_stub, "pdf-tools"))
    await stub.DeleteSkillDefinition(
        pb.DeleteSkillDefinitionRequest(skill_id="pdf-tools", force=True)
    )

    async def gone() -> bool:
        try:
            await _get_definition(replica_stub, "pdf-tools")
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.NOT_FOUND
        return False

    await _eventually(gone)


async def test_a_caller_reads_its_own_writes_without_waiting_for_notify(
    app: App, stub: Stub, db: asyncpg.Connection
) -> None:
    # No catalog NOTIFY at all in this test's database: only the writer's own
    # invalidation can make the next read fresh.
    await db.execute(
        "ALTER TABLE skill_definitions DISABLE TRIGGER skill_definitions_notify_catalog"
    )
    await db.execute("ALTER TABLE skill_packages DISABLE TRIGGER skill_packages_notify_catalog")
    await create_skill(stub, "pdf-tools", display_name="one")
    await _get_definition(stub, "pdf-tools")
    await _cached_read(app, _get_definition(stub, "pdf-tools"))

    await _rename(stub, "pdf-tools", "two")
    assert (await _get_definition(stub, "pdf-tools")).display_name == "two"

    await expect_status(_get_package(stub, "pdf-tools"), grpc.StatusCode.NOT_FOUND)
    for version in ("1.0.0", "1.1.0"):
        final, _ = await install_and_wait(
            stub, "pdf-tools", skill_archive("pdf-tools", version), version=version
        )
        assert final.state == resources_pb2.OPERATION_STATE_SUCCEEDED, final.error
        assert (await _get_package(stub, "pdf-tools")).version == version
        await _cached_read(app, _get_package(stub, "pdf-tools"))

    await stub.Rollback(pb.RollbackRequest(skill_id="pdf-tools", target_version="1.0.0"))
    assert (await _get_package(stub, "pdf-tools")).version == "1.0.0"
    assert not (await _get_package(stub, "pdf-tools", "1.1.0")).current
    await stub.DeletePackage(pb.DeletePackageRequest(skill_id="pdf-tools", version="1.1.0"))
    await expect_status(_get_package(stub, "pdf-tools", "1.1.0"), grpc.StatusCode.NOT_FOUND)
    await stub.DeleteSkillDefinition(
        pb.DeleteSkillDefinitionRequest(skill_id="pdf-tools", force=True)
    )
    await expect_status(_get_definition(stub, "pdf-tools"), grpc.StatusCode.NOT_FOUND)


async def test_after_a_listener_disconnect_the_cache_serves_nothing_stale(
    app: App, stub: Stub, db: asyncpg.Connection
) -> None:
    await create_skill(stub, "pdf-tools", display_name="one")
    await _settle(app, db)
    await _get_definition(stub, "pdf-tools")
    await _cached_read(app, _get_definition(stub, "pdf-tools"))
    # A change whose notification this process never hears (triggers off for this
    # one session: exactly what a NOTIFY lost while disconnected looks like).
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "UPDATE skill_definitions SET display_name = 'two' WHERE skill_id = 'pdf-tools'"
        )
    # Without a notification the cache still answers with what it holds...
    assert (await _get_definition(stub, "pdf-tools")).display_name == "one"

    # ...until the LISTEN connection drops: then nothing cached may be trusted.
    reconnects = app.listener.reconnects
    pid = app.listener.backend_pid
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)

    async def reconnected() -> bool:
        return app.listener.reconnects > reconnects and app.listener.connected

    await _eventually(reconnected)
    assert app.listener.backend_pid != pid
    assert (await _get_definition(stub, "pdf-tools")).display_name == "two"
    # And the reconnected listener hears changes again.
    await _get_definition(stub, "pdf-tools")
    await _cached_read(app, _get_definition(stub, "pdf-tools"))
    await db.execute(
        "UPDATE skill_definitions SET display_name = 'three' WHERE skill_id = 'pdf-tools'"
    )

    async def three() -> bool:
        return (await _get_definition(stub, "pdf-tools")).display_name == "three"

    await _eventually(three)


async def test_the_trigger_announces_every_catalog_change(
    db: asyncpg.Connection, db_url: str
) -> None:
    heard: list[str] = []
    listener = await asyncpg.connect(db_url)
    try:
        await listener.add_listener(CATALOG_CHANNEL, lambda *args: heard.append(args[-1]))
        await db.execute(
            "INSERT INTO skill_definitions (skill_id, public) VALUES ('a-skill', true)"
        )
        await db.execute(
            "INSERT INTO skill_packages (skill_id, version, state, source_type, operation_id)"
            " VALUES ('a-skill', '1.0.0', 'READY', 'UPLOAD', gen_random_uuid())"
        )
        await db.execute("UPDATE skill_definitions SET current_version = '1.0.0'")
        async with db.transaction():  # one notification per skill and transaction
            await db.execute("DELETE FROM skill_packages WHERE skill_id = 'a-skill'")
            await db.execute("DELETE FROM skill_definitions WHERE skill_id = 'a-skill'")
        # A rolled-back change announces nothing.
        with pytest.raises(asyncpg.DivisionByZeroError):
            await _rolled_back(db)
        await db.execute(
            "INSERT INTO skill_definitions (skill_id, public) VALUES ('c-skill', true)"
        )

        async def all_heard() -> bool:
            return len(heard) >= 5

        await _eventually(all_heard)
        assert heard == ["a-skill", "a-skill", "a-skill", "a-skill", "c-skill"]
    finally:
        await listener.close()


async def test_a_replica_hears_the_catalog_change_before_done(stub: Stub, db_url: str) -> None:
    # A watcher that hears DONE and then reads from any replica must not be served the
    # rows from before: one connection carries both channels in commit order, so in
    # the install's last transaction the catalog notification must come before DONE.
    heard: list[tuple[str, str]] = []
    listener = await asyncpg.connect(db_url)
    try:
        await listener.add_listener(
            CATALOG_CHANNEL, lambda *args: heard.append(("catalog", args[-1]))
        )
        await listener.add_listener(
            PROGRESS_CHANNEL,
            lambda *args: heard.append(("progress", json.loads(args[-1])["stage"])),
        )
        await create_skill(stub, "ordered")
        # With a version in the request, then one from the manifest (claimed later).
        await install_and_wait(stub, "ordered", skill_archive("ordered", "1.0.0"), version="1.0.0")
        await install_and_wait(stub, "ordered", skill_archive("ordered", "1.1.0"))

        async def both_done() -> bool:
            return heard.count(("progress", "DONE")) == 2

        await _eventually(both_done)
        for done in (i for i, h in enumerate(heard) if h == ("progress", "DONE")):
            committing = max(i for i in range(done) if heard[i] == ("progress", "COMMITTING"))
            assert ("catalog", "ordered") in heard[committing + 1 : done], heard
    finally:
        await listener.close()


async def _rolled_back(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await db.execute(
            "INSERT INTO skill_definitions (skill_id, public) VALUES ('b-skill', true)"
        )
        await db.execute("SELECT 1/0")


def _definition(skill_id: str) -> Definition:
    now = datetime.now(UTC)
    return Definition(skill_id, "acme", "", "", True, False, None, now, now)


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = ReadCache(3, 60)
    cache.connected()
    for name in ("a", "b", "c"):
        cache.put_definition(name, _definition(name), cache.generation)
    assert cache.definition("a") is not None  # a is now the most recently used
    cache.put_definition("d", _definition("d"), cache.generation)
    assert len(cache) == 3
    assert cache.definition("b") is None
    assert [n for n in "acd" if cache.definition(n) is not None] == ["a", "c", "d"]


def test_a_read_that_began_before_an_invalidation_is_not_stored() -> None:
    cache = ReadCache(10, 60)
    cache.connected()
    generation = cache.generation
    cache.dispatch("other")  # a change lands while the read is in flight
    cache.put_definition("a", _definition("a"), generation)
    assert cache.definition("a") is None


def test_entries_expire_and_nothing_is_served_while_disconnected() -> None:
    now = [0.0]
    cache = ReadCache(10, 5, clock=lambda: now[0])
    cache.put_definition("a", _definition("a"), cache.generation)
    assert cache.definition("a") is None  # not connected yet: nothing stored
    cache.connected()
    cache.put_definition("a", _definition("a"), cache.generation)
    assert cache.definition("a") is not None
    now[0] = 5.0
    assert cache.definition("a") is None
    cache.put_definition("a", _definition("a"), cache.generation)
    cache.disconnected()
    assert cache.definition("a") is None
    cache.put_definition("a", _definition("a"), cache.generation)
    cache.connected()
    assert cache.definition("a") is None
