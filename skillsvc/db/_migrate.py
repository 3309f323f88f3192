"""Numbered SQL migrations, applied in order under an advisory lock.

Migrations are plain SQL files ``migrations/NNNN_name.sql``. ``migrate`` takes a
session-level advisory lock first, so several replicas starting at once against one
empty database apply each migration exactly once: the others wait, then find nothing
left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import asyncpg

logger = logging.getLogger(__name__)

# Arbitrary but fixed: the key of the advisory lock that serialises migrations.
MIGRATION_LOCK_KEY: Final = 0x5C11_5EC0

_CREATE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
_APPLIED: Final = "SELECT version FROM schema_migrations"
_RECORD: Final = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
_LOCK: Final = "SELECT pg_advisory_lock($1)"
_UNLOCK: Final = "SELECT pg_advisory_unlock($1)"

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    """Its number, from the file name."""
    name: str
    """Its name, from the file name."""
    sql: str
    """The statements."""


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("skillsvc.db").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply the pending migrations on ``conn``; returns those it applied."""
    applied_now: list[Migration] = []
    await conn.execute(_LOCK, MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        done = {r["version"] for r in await conn.fetch(_APPLIED)}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(_RECORD, migration.version, migration.name)
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            applied_now.append(migration)
    finally:
        await conn.execute(_UNLOCK, MIGRATION_LOCK_KEY)
    return applied_now
