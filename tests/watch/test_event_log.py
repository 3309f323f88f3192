"""The change log in SQL alone: numbering under concurrent writers and publishers."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from skillsvc.db import EventLog


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
