"""The database layer: the repository (all SQL), migrations and the embedded server."""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from skillsvc.db._admin import forget_instances, holds_skills, schema_version, server_major
from skillsvc.db._driver import SERVER_SETTINGS
from skillsvc.db._embedded import EmbeddedPostgres
from skillsvc.db._events import EVENTS_CHANNEL, EventLog
from skillsvc.db._listener import CATALOG_CHANNEL, Listener
from skillsvc.db._migrate import Migration, load_migrations, migrate
from skillsvc.db._queries import PROGRESS_CHANNEL
from skillsvc.db._repository import (
    Database,
    Instance,
    NewOperation,
    OperationChanges,
    Repository,
    SkillSync,
    VersionClaim,
    translate_errors,
)
from skillsvc.errors import Unavailable
from skillsvc.metrics import DB_STATEMENTS

__all__ = [
    "CATALOG_CHANNEL",
    "EVENTS_CHANNEL",
    "PROGRESS_CHANNEL",
    "Database",
    "EmbeddedPostgres",
    "EventLog",
    "Instance",
    "Listener",
    "Migration",
    "NewOperation",
    "OperationChanges",
    "Repository",
    "SkillSync",
    "VersionClaim",
    "connect",
    "forget_instances",
    "holds_skills",
    "load_migrations",
    "migrate",
    "redact_url",
    "schema_version",
    "server_major",
    "translate_errors",
]


def redact_url(url: str) -> str:
    """``url`` without its password, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


async def _first_connection(url: str) -> asyncpg.Connection:
    # The first connection says whether the configured database can be used at all:
    # a refusal here (unreachable, bad credentials, no such database) is a start-up
    # failure named once, not the per-request "retry later" of translate_errors.
    try:
        return await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(
            f"cannot connect to PostgreSQL at {redact_url(url)}: {exc}",
            reason="DATABASE_UNREACHABLE",
        ) from exc


async def connect(url: str, *, pool_size: int, run_migrations: bool = True) -> Database:
    """Open a pool on ``url`` after applying pending migrations.

    Raises ``Unavailable`` (reason ``DATABASE_UNREACHABLE``, the URL without its
    password in the message) when the database cannot be reached or refuses us.
    """
    conn = await _first_connection(url)
    with translate_errors():
        if run_migrations:
            try:
                await migrate(conn)
            finally:
                await conn.close()
        else:
            await conn.close()
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=pool_size,
            command_timeout=60,
            server_settings=SERVER_SETTINGS,
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
    # Every statement from now on (transaction control included) is counted.
    conn.add_query_logger(_count_statement)


def _count_statement(_: object) -> None:
    DB_STATEMENTS.inc()
