"""The one place that knows asyncpg's exceptions, and the executors statements run on.

Unique and foreign-key violations are keyed by constraint name and become domain
errors; connection failures become :class:`~skillsvc.errors.Unavailable`, and the
connection that saw one is discarded, never handed to the next caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Final, Protocol

import asyncpg

from skillsvc.errors import AlreadyExists, FailedPrecondition, Unavailable

logger = logging.getLogger(__name__)


class Executor(Protocol):
    """What a pool and a connection have in common."""

    async def execute(self, query: str, *args: Any) -> str: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


SERVER_SETTINGS: Final = {"default_transaction_isolation": "read committed"}
"""Session settings of every connection the service opens.

The change-log publisher (``skillsvc_publish_events``), the claim function
(``skillsvc_claim_version``) and the visibility rewrite of migration 0009 take a lock,
then rely on their next statement seeing everything committed before the lock was
granted: READ COMMITTED. A server or database configured with another default
(``default_transaction_isolation = 'repeatable read'``) would make concurrent
publishers fail and claims count stale rows, so the service sets it per connection.
"""


# Constraint names the domain cares about (see migrations/0001_initial.sql).
_UNIQUE_ERRORS: Final = {
    "skill_definitions_pkey": "skill definition {0!r} already exists",
}
_FOREIGN_KEY_ERRORS: Final = {
    "skill_packages_skill_id_fkey": "skill definition {0!r} still has packages",
}


# Failures of the connection (or of the server behind it) rather than of a statement:
# the caller gets UNAVAILABLE and the connection that saw one is discarded, never
# handed to the next caller (asyncpg's InternalClientError, "cannot switch to state
# 12", leaves a connection whose protocol state is unknown).
CONNECTION_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    # 57xxx: admin/crash shutdown, "the database system is starting up", a cancelled
    # statement.
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InsufficientResourcesError,
    # "database is not currently accepting connections", while an operator has
    # disabled connections to it.
    asyncpg.ObjectNotInPrerequisiteStateError,
    # A failover left this connection on a server that is now a read-only standby.
    asyncpg.ReadOnlySQLTransactionError,
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` condemns the connection it came from."""
    return isinstance(exc, CONNECTION_ERRORS)


@contextlib.contextmanager
def translate_errors(subject: str = "") -> Iterator[None]:
    """Turn driver exceptions into domain errors; the one place that knows asyncpg's.

    Wrap database calls only: an ``OSError`` from anything else (the file store) in
    the block would be reported as a database outage.
    """
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
    except CONNECTION_ERRORS as exc:
        logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        raise Unavailable("the database is unavailable, retry later") from exc


def discard_connection(conn: Any) -> None:
    """Close ``conn`` at once (unless the pool already took a lost one back)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        if not conn.is_closed():
            conn.terminate()


class Discarding:
    """Runs each statement on a pooled connection; a connection error discards it.

    ``asyncpg.Pool.fetch`` and friends would release a connection that saw a protocol
    error back into the pool for the next caller; this terminates it instead (the
    pool opens a fresh one when needed).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _run(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        async with self._pool.acquire() as conn:
            try:
                return await getattr(conn, method)(query, *args)
            except BaseException as exc:
                if is_connection_error(exc) or isinstance(exc, asyncio.CancelledError):
                    # A statement cut off half-way leaves the protocol mid-message.
                    discard_connection(conn)
                raise

    async def execute(self, query: str, *args: Any) -> str:
        return str(await self._run("execute", query, args))

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return list(await self._run("fetch", query, args))

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._run("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, args)


def root_error(exc: BaseException) -> BaseException:
    """The driver error behind a translated one (``Unavailable`` from ``...``)."""
    cause = exc.__cause__
    return cause if isinstance(exc, Unavailable) and cause is not None else exc
