"""SQL of the operator commands (``skillsvc migrate``, ``backup``, ``restore``).

These run on a single connection of their own, outside the service's pool, so they
take an ``asyncpg.Connection`` rather than a :class:`~skillsvc.db.Database`.
"""

from __future__ import annotations

from typing import Final

import asyncpg

SERVER_VERSION_NUM: Final = "SHOW server_version_num"
SCHEMA_VERSION: Final = "SELECT max(version) FROM schema_migrations"
# to_regclass is NULL for a missing table, so this answers on an empty database too.
SKILLS_TABLE_EXISTS: Final = "SELECT to_regclass('skill_definitions') IS NOT NULL"
ANY_SKILL: Final = "SELECT EXISTS (SELECT 1 FROM skill_definitions)"
FORGET_INSTANCES: Final = "DELETE FROM skill_instances"


async def server_major(conn: asyncpg.Connection) -> int:
    """The PostgreSQL major version of the server behind ``conn``."""
    return int(await conn.fetchval(SERVER_VERSION_NUM)) // 10000


async def schema_version(conn: asyncpg.Connection) -> int | None:
    """The newest applied migration, None before the first."""
    version = await conn.fetchval(SCHEMA_VERSION)
    return None if version is None else int(version)


async def holds_skills(conn: asyncpg.Connection) -> bool:
    """True when the database has the service's schema and at least one definition."""
    if not await conn.fetchval(SKILLS_TABLE_EXISTS):
        return False
    return bool(await conn.fetchval(ANY_SKILL))


async def forget_instances(conn: asyncpg.Connection) -> None:
    """Forget every registered process (after a restore: they belong to the old deployment)."""
    await conn.execute(FORGET_INSTANCES)
