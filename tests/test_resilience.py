"""Background loops and the database boundary under faults (issue 10, findings 4-6, 9).

Faults are real: a table renamed under the heartbeat, a backend killed, two statements
on one connection at once. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random

import asyncpg
import pytest

from skillsvc.db import Database, connect
from skillsvc.db._repository import translate_errors
from skillsvc.errors import Unavailable
from skillsvc.loops import Backoff, cancel_and_wait
from skillsvc.server import App


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0, _random=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [min(1.0, 0.1 * 2**n) for n in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == len(delays)  # jittered, never in lockstep
    backoff.reset()
    assert backoff.next_delay() <= 0.1


async def test_heartbeat_survives_an_unexpected_database_error(
    make_app: object, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="skillsvc.core.installs")
    app: App = await make_app(heartbeat_seconds=0.2)  # type: ignore[operator]
    instance = app.installer.instance_id

    async def beat_time() -> object:
        return await db.fetchval(
            "SELECT heartbeat_time FROM skill_instances WHERE instance_id = $1", instance
        )

    # An error translate_errors does not know (UndefinedTableError) hits every beat.
    await db.execute("ALTER TABLE skill_instances RENAME TO skill_instances_away")
    try:
        async with asyncio.timeout(20):
            while sum("failed again" in r.getMessage() for r in caplog.records) < 2:
                await asyncio.sleep(0.05)
    finally:
        await db.execute("ALTER TABLE skill_instances_away RENAME TO skill_instances")
    before = await beat_time()
    async with asyncio.timeout(20):
        # The beat lands in the database before its loop logs the recovery.
        while await beat_time() == before or not any(
            "install heartbeat recovered" in r.getMessage() for r in caplog.records
        ):
            await asyncio.sleep(0.05)
    async with asyncio.timeout(20):
        while not any("install heartbeat recovered" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.05)
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("install heartbeat failed")
    ]
    # Logged once for the whole streak, with the traceback; its end at INFO.
    assert len(warnings) == 1
    assert warnings[0].exc_info is not None
    assert app.installer._heartbeat is not None and not app.installer._heartbeat.done()
    await app.stop(0)  # does not raise, and shuts everything down
    assert app.db.pool.is_closing()


def test_connection_level_driver_errors_are_unavailable() -> None:
    for exc in (
        asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    ):
        with pytest.raises(Unavailable), translate_errors():
            raise exc


async def _backends(admin: asyncpg.Connection, database: str) -> set[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    return {r["pid"] for r in rows}


async def test_a_connection_that_saw_a_driver_error_is_discarded(
    db_url: str, db: asyncpg.Connection
) -> None:
    database: Database = await connect(db_url, pool_size=1, run_migrations=False)
    try:
        pids: list[int] = []

        async def overlap() -> None:
            async with database.transaction() as tx:
                pids.append(await tx._db.fetchval("SELECT pg_backend_pid()"))
                # Two statements at once on one connection: asyncpg's InterfaceError
                # ("another operation is in progress") leaves it in an unknown state.
                await asyncio.gather(tx.ping(), tx.ping())

        with pytest.raises(Unavailable):
            await overlap()
        pid = pids[0]
        name = await db.fetchval("SELECT current_database()")
        async with asyncio.timeout(10):
            while pid in await _backends(db, name):
                await asyncio.sleep(0.05)
        # The pool replaced it: the next caller gets a fresh, working connection.
        await database.repo.ping()
        async with database.transaction() as tx:
            assert await tx._db.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await database.close()


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.ENOSPC, "No space left on device"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
    ],
)
async def test_store_errors_inside_a_transaction_are_not_database_outages(
    db_url: str, error: OSError
) -> None:
    database = await connect(db_url, pool_size=1, run_migrations=False)
    try:

        async def store_fails() -> None:
            async with database.transaction() as tx:
                await tx.ping()
                raise error

        with pytest.raises(type(error)) as raised:
            await store_fails()
        assert raised.value is error
        # The transaction rolled back and the connection stayed usable.
        async with database.transaction() as tx:
            await tx.ping()
    finally:
        await database.close()


async def test_cancel_and_wait_ends_a_task_that_swallowed_its_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop that swallows one cancellation (as Python 3.11's wait_for can) still ends,
    and one that never ends is left behind after the bound instead of hanging stop."""
    swallowed = 0

    async def swallows_once() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    release = asyncio.Event()

    async def never_ends() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if release.is_set():
                    raise

    first = asyncio.create_task(swallows_once())
    await asyncio.sleep(0)
    await cancel_and_wait([first], bound=5)
    assert first.cancelled() and swallowed == 2

    stuck = asyncio.create_task(never_ends(), name="stuck")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="skillsvc.loops"):
        await cancel_and_wait([stuck], bound=0.3)
    assert loop.time() - started < 2
    assert not stuck.done()
    assert "task stuck did not end" in caplog.text
    release.set()  # the test's own clean-up
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
