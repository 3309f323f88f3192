"""The change log in SQL alone: numbering under concurrent writers and publishers."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg

from skillsvc.db import EventLog, connect


async def test_concurrent_writers_and_publishers_give_a_reader_every_event_once(
    db: asyncpg.Connection, db_url: str
) -> None:
    # Writers hold their transactions open for random times, so they commit in an
    # order unrelated to the order their events were inserted in; several publishers
    # number concurrently; one reader follows "seq > last" and must miss nothing.
    writers = 24
    rng = random.Random(15)
    delays = [rng.uniform(0, 0.3) for _ in range(writers)]
    done = asyncio.Event()

    async def write(i: int) -> None:
        conn = await asyncpg.connect(db_url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO skill_definitions (skill_id, public) VALUES ($1, true)",
                    f"w-{i}",
                )
                await asyncio.sleep(delays[i])
        finally:
            await conn.close()

    async def publish() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            while not done.is_set():
                await conn.fetchval("SELECT skillsvc_publish_events()")
        finally:
            await conn.close()

    seen: list[tuple[int, str]] = []

    async def read() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            last = 0
            while True:
                finished = done.is_set()
                rows = await conn.fetch(
                    "SELECT seq, skill_id FROM skill_events WHERE seq > $1 ORDER BY seq", last
                )
                for row in rows:
                    assert row["seq"] == last + 1, "a gap below the head"
                    seen.append((row["seq"], row["skill_id"]))
                    last = row["seq"]
                if finished:
                    return
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    publishers = [asyncio.create_task(publish()) for _ in range(6)]
    reader = asyncio.create_task(read())
    await asyncio.gather(*(write(i) for i in range(writers)))
    # Everything committed: one last publication, then let the reader catch up.
    await db.fetchval("SELECT skillsvc_publish_events()")
    done.set()
    await asyncio.gather(*publishers)
    await reader
    assert sorted(name for _, name in seen) == sorted(f"w-{i}" for i in range(writers))
    assert [seq for seq, _ in seen] == list(range(1, writers + 1))
    # The interleaving really happened: numbering order differs from insertion order.
    rows = await db.fetch("SELECT id, seq FROM skill_events ORDER BY id")
    assert [r["seq"] for r in rows] != sorted(r["seq"] for r in rows)
    assert await db.fetchval("SELECT seq FROM skill_event_head") == writers


async def test_pruning_keeps_a_suffix_and_the_head(db: asyncpg.Connection) -> None:
    for i in range(3):
        await db.execute(
            "INSERT INTO skill_definitions (skill_id, public) VALUES ($1, true)", f"p-{i}"
        )
    # An unpublished event is never pruned: it could not be reported lost.
    await db.execute("UPDATE skill_events SET time = now() - interval '2 days'")
    assert await db.fetchval("SELECT count(*) FROM skill_events WHERE seq IS NULL") == 3
    assert await db.fetchval("SELECT skillsvc_publish_events()") == 3
    await db.execute(
        "UPDATE skill_events SET time = now() WHERE seq = 3; "
        "INSERT INTO skill_definitions (skill_id, public) VALUES ('p-new', true)"
    )
    await db.fetchval("SELECT skillsvc_publish_events()")
    log = EventLog(db)
    assert await log.prune(24 * 3600) == 2
    assert [r["seq"] for r in await db.fetch("SELECT seq FROM skill_events ORDER BY seq")] == [3, 4]
    window = await log.window(1, 10)
    assert (window.head, window.oldest, window.events) == (4, 3, window.events)
    # Everything old: nothing is kept, and the head still says where numbering is.
    await db.execute("UPDATE skill_events SET time = now() - interval '2 days'")
    assert await log.prune(24 * 3600) == 2
    window = await log.window(4, 10)
    assert (window.head, window.oldest, window.events) == (4, None, [])


async def _waiting_or_done(db: asyncpg.Connection, conn: asyncpg.Connection, task: Any) -> None:
    """Return once ``conn``'s statement (run by ``task``) waits for a lock or is done."""
    pid = conn.get_server_pid()
    async with asyncio.timeout(20):
        while not task.done() and not await db.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        ):
            await asyncio.sleep(0.01)


async def test_a_version_ready_racing_its_skill_going_private_is_private(
    db: asyncpg.Connection, db_url: str
) -> None:
    # Both orders of two concurrent transactions: the definition goes private (and
    # hides the skill's past) while a version becomes READY. Either way, the READY
    # event must end up private: it is never shown to another tenant.
    hider, installer = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        for skill in ("hidden-first", "ready-first"):
            await db.execute(
                "INSERT INTO skill_definitions (skill_id, tenant, public) VALUES ($1, 'globex', true)",
                skill,
            )
            await db.execute(
                "INSERT INTO skill_packages (skill_id, version, state, source_type) "
                "VALUES ($1, '1.0.0', 'INSTALLING', 'UPLOAD')",
                skill,
            )
        hide = "UPDATE skill_definitions SET public = false WHERE skill_id = $1"
        ready = "UPDATE skill_packages SET state = 'READY' WHERE skill_id = $1"

        # The definition goes private first; the READY commits while that is open.
        async with hider.transaction():
            await hider.execute(hide, "hidden-first")
            late = asyncio.create_task(installer.execute(ready, "hidden-first"))
            await _waiting_or_done(db, installer, late)
        await late

        # The READY first; the definition goes private while that is open.
        async with installer.transaction():
            await installer.execute(ready, "ready-first")
            late = asyncio.create_task(hider.execute(hide, "ready-first"))
            await _waiting_or_done(db, hider, late)
        await late

        rows = await db.fetch(
            "SELECT skill_id, public FROM skill_events WHERE type = 'PACKAGE_READY' "
            "ORDER BY skill_id"
        )
        assert [tuple(r) for r in rows] == [("hidden-first", False), ("ready-first", False)]
    finally:
        await hider.close()
        await installer.close()


async def test_publishing_is_safe_where_the_default_isolation_is_repeatable_read(
    db: asyncpg.Connection, db_url: str
) -> None:
    # A database whose sessions default to REPEATABLE READ: a publisher that waited
    # for the head's lock would read with a snapshot from before it and fail ("could
    # not serialize access"). The service's own connections pin READ COMMITTED.
    name = await db.fetchval("SELECT current_database()")
    await db.execute(
        f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
    )
    database = await connect(db_url, pool_size=2)
    holder = await asyncpg.connect(db_url)
    try:
        await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('rr-a', true)")
        async with holder.transaction():
            assert await holder.fetchval("SELECT skillsvc_publish_events()") == 1
            # Committed while the holder has the head: the service's publisher waits.
            await db.execute(
                "INSERT INTO skill_definitions (skill_id, public) VALUES ('rr-b', true)"
            )
            publishing = asyncio.create_task(database.events.publish())
            async with asyncio.timeout(20):
                while not await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                ):
                    await asyncio.sleep(0.01)
        assert await publishing == 2
        rows = await db.fetch("SELECT seq, skill_id FROM skill_events ORDER BY seq")
        assert [tuple(r) for r in rows] == [(1, "rr-a"), (2, "rr-b")]
        assert await holder.fetchval("SHOW default_transaction_isolation") == "repeatable read"
        async with database.pool.acquire() as pooled:
            assert await pooled.fetchval("SHOW default_transaction_isolation") == "read committed"
    finally:
        await holder.close()
        await database.close()
