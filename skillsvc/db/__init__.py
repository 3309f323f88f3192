"""The database layer: the repository (all SQL), migrations and the embedded server."""

from __future__ import annotations

import asyncpg

from skillsvc.db._embedded import EmbeddedPostgres
from skillsvc.db._migrate import Migration, load_migrations, migrate
from skillsvc.db._repository import Database, Repository, translate_errors

__all__ = [
    "Database",
    "EmbeddedPostgres",
    "Migration",
    "Repository",
    "connect",
    "load_migrations",
    "migrate",
    "translate_errors",
]


async def connect(url: str, *, pool_size: int, run_migrations: bool = True) -> Database:
    """Open a pool on ``url`` after applying pending migrations."""
    with translate_errors():
        if run_migrations:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn)
            finally:
                await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, command_timeout=60)
    return Database(pool)
