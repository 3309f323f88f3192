"""All SQL of skillsvc, as named constants, and the repository that runs it.

The repository is the database boundary: asyncpg exceptions never leave it. Unique
and foreign-key violations are keyed by constraint name and become domain errors;
connection failures become :class:`~skillsvc.errors.Unavailable`. Rows come out as
the frozen dataclasses of :mod:`skillsvc.core.models`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final, Protocol

import asyncpg

from skillsvc.core.models import Definition, DefinitionChanges
from skillsvc.errors import AlreadyExists, FailedPrecondition, Unavailable

logger = logging.getLogger(__name__)


class _Executor(Protocol):
    """What a pool and a connection have in common."""

    async def execute(self, query: str, *args: Any) -> str: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


INSERT_DEFINITION: Final = """
INSERT INTO skill_definitions (skill_id, tenant, display_name, description, active, public)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING skill_id, tenant, display_name, description, active, public, current_version,
    create_time, update_time
"""

# $2 is the caller's tenant, or NULL for an admin who sees every definition.
GET_DEFINITION: Final = """
SELECT skill_id, tenant, display_name, description, active, public, current_version,
    create_time, update_time
FROM skill_definitions
WHERE skill_id = $1 AND ($2::text IS NULL OR tenant = $2 OR public)
"""

LIST_DEFINITIONS: Final = """
SELECT skill_id, tenant, display_name, description, active, public, current_version,
    create_time, update_time
FROM skill_definitions
WHERE ($1::text IS NULL OR tenant = $1 OR public)
  AND ($2 OR active)
  AND skill_id > $3
ORDER BY skill_id
LIMIT $4
"""

UPDATE_DEFINITION: Final = """
UPDATE skill_definitions SET
    display_name = COALESCE($2, display_name),
    description  = COALESCE($3, description),
    active       = COALESCE($4, active),
    public       = COALESCE($5, public),
    update_time  = now()
WHERE skill_id = $1
RETURNING skill_id, tenant, display_name, description, active, public, current_version,
    create_time, update_time
"""

DELETE_DEFINITION: Final = "DELETE FROM skill_definitions WHERE skill_id = $1"

COUNT_PACKAGES: Final = "SELECT count(*) FROM skill_packages WHERE skill_id = $1"

PING: Final = "SELECT 1"

# Constraint names the domain cares about (see migrations/0001_initial.sql).
_UNIQUE_ERRORS: Final = {
    "skill_definitions_pkey": "skill definition {0!r} already exists",
}
_FOREIGN_KEY_ERRORS: Final = {
    "skill_packages_skill_id_fkey": "skill definition {0!r} still has packages",
}


@contextlib.contextmanager
def translate_errors(subject: str = "") -> Iterator[None]:
    """Turn driver exceptions into domain errors; the one place that knows asyncpg's."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        template = _UNIQUE_ERRORS.get(exc.constraint_name or "")
        if template is None:
            raise
        raise AlreadyExists(template.format(subject)) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        template = _FOREIGN_KEY_ERRORS.get(exc.constraint_name or "")
        if template is None:
            raise
        raise FailedPrecondition(template.format(subject), reason="HAS_PACKAGES") from exc
    except (
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.TooManyConnectionsError,
        asyncpg.InsufficientResourcesError,
        # "database is not currently accepting connections", while an operator has
        # disabled connections to it.
        asyncpg.ObjectNotInPrerequisiteStateError,
        TimeoutError,
    ) as exc:
        logger.warning("database unavailable: %s", exc)
        raise Unavailable("the database is unavailable, retry later") from exc


def _definition(row: Any) -> Definition:
    return Definition(
        skill_id=row["skill_id"],
        tenant=row["tenant"],
        display_name=row["display_name"],
        description=row["description"],
        active=row["active"],
        public=row["public"],
        current_version=row["current_version"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


class Repository:
    """Named queries over a pool (each call on its own) or one connection (a transaction)."""

    def __init__(self, executor: _Executor) -> None:
        self._db = executor

    async def ping(self) -> None:
        """Round-trip to the database; raises Unavailable when it does not answer."""
        with translate_errors():
            await self._db.fetchval(PING)

    async def insert_definition(
        self,
        skill_id: str,
        tenant: str,
        display_name: str,
        description: str,
        *,
        active: bool,
        public: bool,
    ) -> Definition:
        """Insert a definition; AlreadyExists if the id is taken."""
        with translate_errors(skill_id):
            row = await self._db.fetchrow(
                INSERT_DEFINITION, skill_id, tenant, display_name, description, active, public
            )
        return _definition(row)

    async def get_definition(self, skill_id: str, visible_to: str | None) -> Definition | None:
        """The definition if it exists and ``visible_to`` (a tenant, None = all) sees it."""
        with translate_errors(skill_id):
            row = await self._db.fetchrow(GET_DEFINITION, skill_id, visible_to)
        return None if row is None else _definition(row)

    async def list_definitions(
        self, visible_to: str | None, *, include_inactive: bool, after: str, limit: int
    ) -> list[Definition]:
        """Up to ``limit`` visible definitions with ``skill_id > after``, by id."""
        with translate_errors():
            rows = await self._db.fetch(
                LIST_DEFINITIONS, visible_to, include_inactive, after, limit
            )
        return [_definition(r) for r in rows]

    async def update_definition(
        self, skill_id: str, changes: DefinitionChanges
    ) -> Definition | None:
        """Apply ``changes``; None if the definition does not exist."""
        with translate_errors(skill_id):
            row = await self._db.fetchrow(
                UPDATE_DEFINITION,
                skill_id,
                changes.display_name,
                changes.description,
                changes.active,
                changes.public,
            )
        return None if row is None else _definition(row)

    async def delete_definition(self, skill_id: str) -> bool:
        """Delete the definition; False if it did not exist. FailedPrecondition with packages."""
        with translate_errors(skill_id):
            status = await self._db.execute(DELETE_DEFINITION, skill_id)
        return status != "DELETE 0"

    async def count_packages(self, skill_id: str) -> int:
        """How many package rows (any state) the skill has."""
        with translate_errors(skill_id):
            return int(await self._db.fetchval(COUNT_PACKAGES, skill_id))


class Database:
    """The connection pool, and transactions over it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.repo = Repository(pool)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Repository]:
        """A repository bound to one connection inside one transaction."""
        with translate_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                yield Repository(conn)

    async def close(self) -> None:
        """Close every connection, waiting for the ones in use up to a bound."""
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except TimeoutError:
            self.pool.terminate()
