"""Migrations: the schema they produce, and concurrent start-ups."""

from __future__ import annotations

import asyncio

import asyncpg

from skillsvc.db import load_migrations, migrate

EXPECTED_TABLES = {
    "schema_migrations",
    "skill_definitions",
    "skill_packages",
    "skill_install_logs",
    "skill_instances",
    "skill_activations",
    "skill_events",
    "skill_event_head",
}


async def test_migrating_an_empty_database_gives_the_schema(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        applied = await migrate(conn)
        assert [m.version for m in applied] == [m.version for m in load_migrations()]
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == EXPECTED_TABLES
        indexes = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            )
        }
        # The keys and indexes the install log and package queries rely on.
        assert {
            "skill_packages_pkey",
            "skill_packages_skill_created_idx",
            "skill_install_logs_skill_created_idx",
            "skill_install_logs_request_id_key",
        } <= indexes
        pkey = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'skill_packages_pkey'"
        )
        assert pkey == "PRIMARY KEY (skill_id, version)"
        # A second run has nothing left to do.
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(empty_db_url: str) -> None:
    conns = [await asyncpg.connect(empty_db_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [m.version for result in results for m in result]
        assert sorted(applied) == [m.version for m in load_migrations()]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(load_migrations())
    finally:
        for c in conns:
            await c.close()


async def test_skill_id_rule_is_enforced_by_the_database_too(db: asyncpg.Connection) -> None:
    for bad in ["Bad", "-x", "x-", "a--b", ""]:
        try:
            await db.execute(
                "INSERT INTO skill_definitions (skill_id, public) VALUES ($1, true)", bad
            )
        except asyncpg.CheckViolationError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
