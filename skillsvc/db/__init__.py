"""The database layer: the repository (all SQL), migrations and the embedded server."""

from __future__ import annotations

import json

import asyncpg

from skillsvc.db._admin import forget_instances, holds_skills, schema_version, server_major
from skillsvc.db._embedded import EmbeddedPostgres
from skillsvc.db._listener import Listener
from skillsvc.db._migrate import Migration, load_migrations, migrate
from skillsvc.db._repository import (
    PROGRESS_CHANNEL,
    Database,
    Instance,
    NewOperation,
    OperationChanges,
    Repository,
    translate_errors,
)

__all__ = [
    "PROGRESS_CHANNEL",
    "Database",
    "EmbeddedPostgres",
    "Instance",
    "Listener",
    "Migration",
    "NewOperation",
    "OperationChanges",
    "Repository",
    "connect",
    "forget_instances",
    "holds_skills",
    "load_migrations",
    "migrate",
    "schema_version",
    "server_major",
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
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=pool_size,
            command_timeout=60,
            init=_init_connection,
            reset=_keep_session,
        )
    return Database(pool, url)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a pooled connection without the default reset query.

    asyncpg always rolls back an open transaction and drops listeners on release; its
    default reset then also runs ``RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()``, a round trip after every statement (11 % of an
    install's server CPU in the benchmark). Pooled connections here never change
    session settings, never LISTEN (a dedicated connection does) and take only
    transaction-scoped advisory locks, so there is nothing left to reset.
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns (manifests, file digests, error details) as Python objects.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
