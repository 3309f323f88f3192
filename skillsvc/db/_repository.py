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
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import asyncpg

from skillsvc.core.models import (
    Definition,
    DefinitionChanges,
    Operation,
    OperationError,
    OperationState,
    OperationType,
    Package,
    PackageState,
    SourceType,
    Stage,
)
from skillsvc.db._quota_queries import (
    COUNT_LIVE_VERSIONS,
    COUNT_TENANT_DEFINITIONS,
    LOCK_TENANT,
)
from skillsvc.db._version_queries import FIND_IDENTICAL_READY_VERSION, LIST_SKILL_VERSIONS
from skillsvc.errors import Aborted, AlreadyExists, FailedPrecondition, Unavailable

if TYPE_CHECKING:
    from skillsvc.db._maintenance import Maintenance

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

# -- operations (the install log) ------------------------------------------------

INSERT_OPERATION: Final = """
INSERT INTO skill_install_logs (
    operation_id, type, skill_id, version, state, stage, attempt, retry_of, bytes_total,
    requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, from_version, to_version, reason, requested_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22)
ON CONFLICT (skill_id, request_id) WHERE request_id <> '' DO NOTHING
RETURNING operation_id, type, skill_id, version, state, stage, from_version, to_version, reason,
    attempt, retry_of, error_code, error_reason, error_message, error_details, bytes_done,
    bytes_total, requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, seq, requested_version, create_time, update_time
"""

GET_OPERATION_BY_REQUEST_ID: Final = """
SELECT operation_id, type, skill_id, version, state, stage, from_version, to_version, reason,
    attempt, retry_of, error_code, error_reason, error_message, error_details, bytes_done,
    bytes_total, requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, seq, requested_version, create_time, update_time
FROM skill_install_logs WHERE skill_id = $1 AND request_id = $2 AND request_id <> ''
"""

# $2: the caller's tenant, or NULL for an admin (see GET_DEFINITION).
GET_OPERATION: Final = """
SELECT o.operation_id, o.type, o.skill_id, o.version, o.state, o.stage, o.from_version,
    o.to_version, o.reason, o.attempt, o.retry_of, o.error_code, o.error_reason,
    o.error_message, o.error_details, o.bytes_done, o.bytes_total, o.requested_by,
    o.source_type, o.source_uri, o.expected_sha256, o.activate, o.request_id,
    o.archive_sha256, o.owner, o.message, o.seq, o.requested_version, o.create_time,
    o.update_time
FROM skill_install_logs o JOIN skill_definitions d ON d.skill_id = o.skill_id
WHERE o.operation_id = $1 AND ($2::text IS NULL OR d.tenant = $2 OR d.public)
"""

# Newest first; the page position is (create_time, operation_id) of the last row.
LIST_OPERATIONS: Final = """
SELECT operation_id, type, skill_id, version, state, stage, from_version, to_version, reason,
    attempt, retry_of, error_code, error_reason, error_message, error_details, bytes_done,
    bytes_total, requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, seq, requested_version, create_time, update_time
FROM skill_install_logs
WHERE skill_id = $1
  AND ($2::timestamptz IS NULL OR (create_time, operation_id) < ($2, $3::uuid))
ORDER BY create_time DESC, operation_id DESC
LIMIT $4
"""

# One statement changes the row, bumps seq and notifies watchers (NOTIFY is sent when
# the surrounding transaction commits). NULL parameters leave a column unchanged.
UPDATE_OPERATION: Final = """
WITH changed AS (
    UPDATE skill_install_logs SET
        state          = COALESCE($2, state),
        stage          = COALESCE($3, stage),
        version        = COALESCE($4, version),
        bytes_done     = COALESCE($5, bytes_done),
        bytes_total    = COALESCE($6, bytes_total),
        message        = COALESCE($7, message),
        error_code     = COALESCE($8, error_code),
        error_reason   = COALESCE($9, error_reason),
        error_message  = COALESCE($10, error_message),
        error_details  = COALESCE($11::jsonb, error_details),
        archive_sha256 = COALESCE($12, archive_sha256),
        to_version     = COALESCE($13, to_version),
        seq            = seq + 1,
        update_time    = clock_timestamp()
    -- A finished operation never changes again (not even by a process that another
    -- one has, perhaps wrongly, declared dead and reaped).
    WHERE operation_id = $1 AND state IN ('PENDING', 'RUNNING')
    RETURNING operation_id, type, skill_id, version, state, stage, from_version, to_version, reason,
    attempt, retry_of, error_code, error_reason, error_message, error_details, bytes_done,
    bytes_total, requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, seq, requested_version, create_time, update_time
)
SELECT changed.*, pg_notify($14, json_build_object(
    'operation_id', operation_id, 'seq', seq, 'state', state, 'stage', stage,
    'bytes_done', bytes_done, 'bytes_total', bytes_total, 'message', left(message, 500),
    'time', update_time, 'version', version)::text) AS notified
FROM changed
"""

# Start-up and periodic recovery: fail what dead processes left unfinished.
REAP_OPERATIONS: Final = """
WITH reaped AS (
    UPDATE skill_install_logs SET
        state = 'FAILED', stage = 'FAILED', error_code = 'ABORTED', error_reason = 'INTERRUPTED',
        error_message = 'interrupted: the server running this operation stopped',
        message = 'interrupted', seq = seq + 1, update_time = clock_timestamp()
    WHERE state IN ('PENDING', 'RUNNING') AND owner = ANY($1::text[])
    RETURNING operation_id, type, skill_id, version, state, stage, from_version, to_version, reason,
    attempt, retry_of, error_code, error_reason, error_message, error_details, bytes_done,
    bytes_total, requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, seq, requested_version, create_time, update_time
)
SELECT reaped.*, pg_notify($2, json_build_object(
    'operation_id', operation_id, 'seq', seq, 'state', state, 'stage', stage,
    'bytes_done', bytes_done, 'bytes_total', bytes_total, 'message', message,
    'time', update_time, 'version', version)::text) AS notified
FROM reaped
"""

# -- packages -----------------------------------------------------------------------

# Serialises every change to one skill's packages and current version.
LOCK_SKILL: Final = "SELECT pg_advisory_xact_lock(hashtextextended('skillsvc:skill:' || $1, 0))"

# Orders the removal of an archive against an install committing the same bytes.
LOCK_BLOB: Final = "SELECT pg_advisory_xact_lock(hashtextextended('skillsvc:blob:' || $1, 0))"

GET_PACKAGE_FOR_UPDATE: Final = """
SELECT p.skill_id, p.version, p.state, p.sha256, p.size_bytes, p.unpacked_bytes, p.file_count,
    p.source_type, p.source_uri, p.manifest, p.path, p.operation_id, p.create_time, p.update_time,
    (d.current_version IS NOT DISTINCT FROM p.version) AS current
FROM skill_packages p JOIN skill_definitions d ON d.skill_id = p.skill_id
WHERE p.skill_id = $1 AND p.version = $2
FOR UPDATE OF p
"""

GET_PACKAGE: Final = """
SELECT p.skill_id, p.version, p.state, p.sha256, p.size_bytes, p.unpacked_bytes, p.file_count,
    p.source_type, p.source_uri, p.manifest, p.path, p.operation_id, p.create_time, p.update_time,
    (d.current_version IS NOT DISTINCT FROM p.version) AS current
FROM skill_packages p JOIN skill_definitions d ON d.skill_id = p.skill_id
WHERE p.skill_id = $1 AND p.version = $2 AND ($3::text IS NULL OR d.tenant = $3 OR d.public)
"""

# $2 NULL: the skill's current version.
GET_PACKAGE_OR_CURRENT: Final = """
SELECT p.skill_id, p.version, p.state, p.sha256, p.size_bytes, p.unpacked_bytes, p.file_count,
    p.source_type, p.source_uri, p.manifest, p.path, p.operation_id, p.create_time, p.update_time,
    (d.current_version IS NOT DISTINCT FROM p.version) AS current
FROM skill_packages p JOIN skill_definitions d ON d.skill_id = p.skill_id
WHERE p.skill_id = $1 AND p.version = COALESCE($2, d.current_version)
  AND ($3::text IS NULL OR d.tenant = $3 OR d.public)
"""

LIST_PACKAGES: Final = """
SELECT p.skill_id, p.version, p.state, p.sha256, p.size_bytes, p.unpacked_bytes, p.file_count,
    p.source_type, p.source_uri, p.manifest, p.path, p.operation_id, p.create_time, p.update_time,
    (d.current_version IS NOT DISTINCT FROM p.version) AS current
FROM skill_packages p JOIN skill_definitions d ON d.skill_id = p.skill_id
WHERE p.skill_id = $1
  AND ($2::timestamptz IS NULL OR (p.create_time, p.version) < ($2, $3::text))
ORDER BY p.create_time DESC, p.version DESC
LIMIT $4
"""

UPSERT_PACKAGE_CLAIM: Final = """
INSERT INTO skill_packages (skill_id, version, state, source_type, source_uri, operation_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (skill_id, version) DO UPDATE SET
    state = EXCLUDED.state, source_type = EXCLUDED.source_type,
    source_uri = EXCLUDED.source_uri, operation_id = EXCLUDED.operation_id,
    sha256 = '', size_bytes = 0, unpacked_bytes = 0, file_count = 0, manifest = '{}',
    files = '[]', path = '', create_time = now(), update_time = now()
"""

MARK_PACKAGE_READY: Final = """
UPDATE skill_packages SET
    state = 'READY', sha256 = $3, size_bytes = $4, unpacked_bytes = $5, file_count = $6,
    manifest = $7::jsonb, files = $8::jsonb, path = $9, update_time = now()
WHERE skill_id = $1 AND version = $2 AND operation_id = $10
"""

# Release a claim that did not make it to READY.
MARK_PACKAGE_FAILED: Final = """
UPDATE skill_packages SET state = 'FAILED', update_time = now()
WHERE skill_id = $1 AND version = $2 AND operation_id = $3 AND state <> 'READY'
"""

GET_PACKAGE_FILES: Final = """
SELECT files FROM skill_packages WHERE skill_id = $1 AND version = $2
"""

SET_CURRENT_VERSION: Final = """
WITH previous AS (SELECT current_version FROM skill_definitions WHERE skill_id = $1),
updated AS (
    UPDATE skill_definitions SET current_version = $2, update_time = now() WHERE skill_id = $1
)
INSERT INTO skill_activations (skill_id, version, previous_version, operation_id, kind)
SELECT $1, $2, previous.current_version, $3, $4 FROM previous
"""

# -- server processes ---------------------------------------------------------------

REGISTER_INSTANCE: Final = """
INSERT INTO skill_instances (instance_id, hostname, pid) VALUES ($1, $2, $3)
ON CONFLICT (instance_id) DO UPDATE SET heartbeat_time = now()
"""

HEARTBEAT: Final = "UPDATE skill_instances SET heartbeat_time = now() WHERE instance_id = $1"

LIST_INSTANCES: Final = """
SELECT instance_id, hostname, pid, now() - heartbeat_time > make_interval(secs => $1) AS stale
FROM skill_instances
"""

DELETE_INSTANCES: Final = "DELETE FROM skill_instances WHERE instance_id = ANY($1::text[])"

UNFINISHED_OWNERS: Final = """
SELECT DISTINCT owner FROM skill_install_logs WHERE state IN ('PENDING', 'RUNNING')
"""

DELETE_PACKAGE: Final = "DELETE FROM skill_packages WHERE skill_id = $1 AND version = $2"

DELETE_SKILL_PACKAGES: Final = """
WITH cleared AS (
    UPDATE skill_definitions SET current_version = NULL WHERE skill_id = $1
)
DELETE FROM skill_packages WHERE skill_id = $1
"""

# Newest first: the activation history that Rollback walks back.
LIST_ACTIVATIONS: Final = """
SELECT version, previous_version, kind FROM skill_activations
WHERE skill_id = $1 ORDER BY activation_id DESC
"""

# Is an archive in blobs/ still some package's original?
BLOB_IN_USE: Final = "SELECT EXISTS (SELECT 1 FROM skill_packages WHERE sha256 = $1)"

LIST_CURRENT_VERSIONS: Final = "SELECT skill_id, current_version FROM skill_definitions"

PING: Final = "SELECT 1"

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


def _discard(conn: Any) -> None:
    """Close ``conn`` at once (unless the pool already took a lost one back)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        if not conn.is_closed():
            conn.terminate()


class _Discarding:
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
                    _discard(conn)
                raise

    async def execute(self, query: str, *args: Any) -> str:
        return str(await self._run("execute", query, args))

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return list(await self._run("fetch", query, args))

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._run("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, args)


def _root(exc: BaseException) -> BaseException:
    """The driver error behind a translated one (``Unavailable`` from ``...``)."""
    cause = exc.__cause__
    return cause if isinstance(exc, Unavailable) and cause is not None else exc


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


PROGRESS_CHANNEL: Final = "skillsvc_progress"
"""The NOTIFY channel of operation changes."""


def _operation(row: Any) -> Operation:
    error = None
    if row["error_code"]:
        error = OperationError(
            code=row["error_code"],
            reason=row["error_reason"],
            message=row["error_message"],
            details=row["error_details"],
        )
    return Operation(
        operation_id=str(row["operation_id"]),
        type=OperationType(row["type"]),
        skill_id=row["skill_id"],
        version=row["version"],
        state=OperationState(row["state"]),
        stage=Stage(row["stage"]),
        from_version=row["from_version"],
        to_version=row["to_version"],
        reason=row["reason"],
        attempt=row["attempt"],
        retry_of=None if row["retry_of"] is None else str(row["retry_of"]),
        error=error,
        bytes_done=row["bytes_done"],
        bytes_total=row["bytes_total"],
        requested_by=row["requested_by"],
        source_type=SourceType(row["source_type"]) if row["source_type"] else None,
        source_uri=row["source_uri"],
        expected_sha256=row["expected_sha256"],
        activate=row["activate"],
        request_id=row["request_id"],
        archive_sha256=row["archive_sha256"],
        owner=row["owner"],
        message=row["message"],
        seq=row["seq"],
        requested_version=row["requested_version"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def _package(row: Any) -> Package:
    return Package(
        skill_id=row["skill_id"],
        version=row["version"],
        state=PackageState(row["state"]),
        current=row["current"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        unpacked_bytes=row["unpacked_bytes"],
        file_count=row["file_count"],
        source_type=SourceType(row["source_type"]),
        source_uri=row["source_uri"],
        manifest=row["manifest"],
        path=row["path"],
        operation_id=None if row["operation_id"] is None else str(row["operation_id"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


@dataclass(frozen=True)
class NewOperation:
    """The columns of an operation chosen when it is recorded."""

    operation_id: str
    """UUID as text."""
    type: OperationType
    """Install or rollback."""
    skill_id: str
    """The skill."""
    version: str
    """The version, if known."""
    state: OperationState
    """Initial state."""
    stage: Stage
    """Initial stage."""
    requested_by: str
    """The caller."""
    owner: str
    """The instance running it."""
    attempt: int = 1
    """1, or n + 1 for retries."""
    retry_of: str | None = None
    """The retried operation."""
    bytes_total: int = 0
    """Bytes expected."""
    source_type: SourceType | None = None
    """Installs: upload or URL."""
    source_uri: str = ""
    """Installs: the URL."""
    expected_sha256: str = ""
    """Installs: the declared digest."""
    activate: bool = True
    """Installs: activate when done."""
    request_id: str = ""
    """Installs: idempotency key."""
    archive_sha256: str = ""
    """Retries: the digest of the kept bytes."""
    message: str = ""
    """Initial progress message."""
    from_version: str = ""
    """Rollbacks: previous version."""
    to_version: str = ""
    """Rollbacks: new version."""
    reason: str = ""
    """Rollbacks: the caller's reason."""
    requested_version: str = ""
    """Installs: the version the caller asked for (empty: from the manifest)."""


@dataclass(frozen=True)
class OperationChanges:
    """Columns to change on an operation; ``None`` keeps the current value."""

    state: OperationState | None = None
    """New state."""
    stage: Stage | None = None
    """New stage."""
    version: str | None = None
    """The version, once known."""
    bytes_done: int | None = None
    """Progress."""
    bytes_total: int | None = None
    """Expected total."""
    message: str | None = None
    """Progress message."""
    error: OperationError | None = None
    """Set on failure."""
    archive_sha256: str | None = None
    """Digest of the received bytes."""
    to_version: str | None = None
    """Rollbacks: the new current version."""


@dataclass(frozen=True)
class Instance:
    """A server process as the database knows it."""

    instance_id: str
    """Its id."""
    hostname: str
    """The host it runs on."""
    pid: int
    """Its process id there."""
    stale: bool
    """No heartbeat for longer than the staleness bound."""


class Repository:
    """Named queries over a pool (each call on its own) or one connection (a transaction)."""

    def __init__(self, executor: _Executor) -> None:
        self._db = executor

    @property
    def maintenance(self) -> Maintenance:
        """The operator queries (``skillsvc.db._maintenance``) on the same connection."""
        from skillsvc.db._maintenance import Maintenance

        return Maintenance(self._db)

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

    # -- quotas (SQL in _quota_queries) ---------------------------------------------

    async def lock_tenant(self, tenant: str) -> None:
        """Serialise with every other definition create in ``tenant``, until commit."""
        with translate_errors():
            await self._db.execute(LOCK_TENANT, tenant)

    async def count_tenant_definitions(self, tenant: str) -> int:
        """How many definitions ``tenant`` ('' = platform) owns."""
        with translate_errors():
            return int(await self._db.fetchval(COUNT_TENANT_DEFINITIONS, tenant))

    async def count_live_versions(self, skill_id: str) -> int:
        """How many versions of the skill count against its quota (all but FAILED)."""
        with translate_errors(skill_id):
            return int(await self._db.fetchval(COUNT_LIVE_VERSIONS, skill_id))

    # -- version assignment (SQL in _version_queries) --------------------------------

    async def identical_ready_version(self, skill_id: str, sha256: str) -> str | None:
        """The version of a READY package of the skill with this archive digest, if any."""
        with translate_errors(skill_id):
            version = await self._db.fetchval(FIND_IDENTICAL_READY_VERSION, skill_id, sha256)
        return None if version is None else str(version)

    async def skill_versions(self, skill_id: str) -> list[str]:
        """Every version the skill has or had (packages, and succeeded installs)."""
        with translate_errors(skill_id):
            rows = await self._db.fetch(LIST_SKILL_VERSIONS, skill_id)
        return [str(r["version"]) for r in rows]

    # -- operations -----------------------------------------------------------------

    async def insert_operation(self, op: NewOperation) -> tuple[Operation, bool]:
        """Record an operation; with a request_id already used, the earlier one and False."""
        with translate_errors(op.skill_id):
            row = await self._db.fetchrow(
                INSERT_OPERATION,
                uuid.UUID(op.operation_id),
                op.type.value,
                op.skill_id,
                op.version,
                op.state.value,
                op.stage.value,
                op.attempt,
                None if op.retry_of is None else uuid.UUID(op.retry_of),
                op.bytes_total,
                op.requested_by,
                op.source_type.value if op.source_type else "",
                op.source_uri,
                op.expected_sha256,
                op.activate,
                op.request_id,
                op.archive_sha256,
                op.owner,
                op.message,
                op.from_version,
                op.to_version,
                op.reason,
                op.requested_version,
            )
            if row is not None:
                return _operation(row), True
            row = await self._db.fetchrow(GET_OPERATION_BY_REQUEST_ID, op.skill_id, op.request_id)
        if row is None:  # the conflicting row was deleted in between; extremely unlikely
            raise Unavailable("concurrent request with the same request_id, retry")
        return _operation(row), False

    async def get_operation(self, operation_id: str, visible_to: str | None) -> Operation | None:
        """The operation if it exists and its skill is visible to ``visible_to``."""
        with translate_errors():
            row = await self._db.fetchrow(GET_OPERATION, uuid.UUID(operation_id), visible_to)
        return None if row is None else _operation(row)

    async def list_operations(
        self, skill_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Operation]:
        """A skill's operations, newest first, after position ``after``."""
        with translate_errors():
            rows = await self._db.fetch(
                LIST_OPERATIONS,
                skill_id,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
        return [_operation(r) for r in rows]

    async def update_operation(self, operation_id: str, changes: OperationChanges) -> Operation:
        """Apply ``changes``, bump ``seq`` and notify progress watchers."""
        error = changes.error
        with translate_errors():
            row = await self._db.fetchrow(
                UPDATE_OPERATION,
                uuid.UUID(operation_id),
                changes.state.value if changes.state else None,
                changes.stage.value if changes.stage else None,
                changes.version,
                changes.bytes_done,
                changes.bytes_total,
                changes.message,
                error.code if error else None,
                error.reason if error else None,
                error.message if error else None,
                dict(error.details) if error and error.details is not None else None,
                changes.archive_sha256,
                changes.to_version,
                PROGRESS_CHANNEL,
            )
        if row is None:
            raise Aborted(
                f"operation {operation_id} has already ended (or was reaped as interrupted)",
                reason="OPERATION_ENDED",
            )
        return _operation(row)

    async def reap_operations(self, owners: Sequence[str]) -> list[Operation]:
        """Fail the unfinished operations of dead ``owners``; returns them."""
        with translate_errors():
            rows = await self._db.fetch(REAP_OPERATIONS, list(owners), PROGRESS_CHANNEL)
        return [_operation(r) for r in rows]

    async def unfinished_owners(self) -> list[str]:
        """Owners of operations still PENDING or RUNNING."""
        with translate_errors():
            return [r["owner"] for r in await self._db.fetch(UNFINISHED_OWNERS)]

    # -- packages -------------------------------------------------------------------

    async def lock_skill(self, skill_id: str) -> None:
        """Serialise with every other change to this skill, until the transaction ends."""
        with translate_errors():
            await self._db.execute(LOCK_SKILL, skill_id)

    async def lock_blob(self, sha256: str) -> None:
        """Serialise with other users of this archive digest, until the transaction ends."""
        with translate_errors():
            await self._db.execute(LOCK_BLOB, sha256)

    async def get_package_for_update(self, skill_id: str, version: str) -> Package | None:
        """The package row, locked for this transaction."""
        with translate_errors():
            row = await self._db.fetchrow(GET_PACKAGE_FOR_UPDATE, skill_id, version)
        return None if row is None else _package(row)

    async def get_package(
        self, skill_id: str, version: str, visible_to: str | None
    ) -> Package | None:
        """The package if it exists and its skill is visible."""
        with translate_errors():
            row = await self._db.fetchrow(GET_PACKAGE, skill_id, version, visible_to)
        return None if row is None else _package(row)

    async def get_package_or_current(
        self, skill_id: str, version: str | None, visible_to: str | None
    ) -> Package | None:
        """The package (None version: the current one) if it exists and is visible."""
        with translate_errors():
            row = await self._db.fetchrow(GET_PACKAGE_OR_CURRENT, skill_id, version, visible_to)
        return None if row is None else _package(row)

    async def list_packages(
        self, skill_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Package]:
        """A skill's packages, newest first, after position ``after``."""
        with translate_errors():
            rows = await self._db.fetch(
                LIST_PACKAGES,
                skill_id,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
        return [_package(r) for r in rows]

    async def claim_package(
        self,
        *,
        skill_id: str,
        version: str,
        state: PackageState,
        source_type: SourceType,
        source_uri: str,
        operation_id: str,
    ) -> None:
        """Create the package row, or take over a FAILED one, for ``operation_id``."""
        with translate_errors(skill_id):
            await self._db.execute(
                UPSERT_PACKAGE_CLAIM,
                skill_id,
                version,
                state.value,
                source_type.value,
                source_uri,
                uuid.UUID(operation_id),
            )

    async def mark_package_ready(
        self,
        skill_id: str,
        version: str,
        operation_id: str,
        *,
        sha256: str,
        size_bytes: int,
        unpacked_bytes: int,
        file_count: int,
        manifest: Mapping[str, Any],
        files: Sequence[Mapping[str, Any]],
        path: str,
    ) -> bool:
        """Record the committed package as READY; False if the claim was lost."""
        with translate_errors(skill_id):
            status = await self._db.execute(
                MARK_PACKAGE_READY,
                skill_id,
                version,
                sha256,
                size_bytes,
                unpacked_bytes,
                file_count,
                dict(manifest),
                list(files),
                path,
                uuid.UUID(operation_id),
            )
        return status == "UPDATE 1"

    async def mark_package_failed(self, skill_id: str, version: str, operation_id: str) -> None:
        """Release ``operation_id``'s claim on a version that did not become READY."""
        with translate_errors(skill_id):
            await self._db.execute(MARK_PACKAGE_FAILED, skill_id, version, uuid.UUID(operation_id))

    async def package_files(self, skill_id: str, version: str) -> list[dict[str, Any]]:
        """The per-file digests recorded at install."""
        with translate_errors(skill_id):
            files = await self._db.fetchval(GET_PACKAGE_FILES, skill_id, version)
        return list(files or [])

    async def set_current_version(
        self, skill_id: str, version: str, operation_id: str | None, kind: OperationType
    ) -> None:
        """Make ``version`` current and record the activation."""
        with translate_errors(skill_id):
            await self._db.execute(
                SET_CURRENT_VERSION,
                skill_id,
                version,
                None if operation_id is None else uuid.UUID(operation_id),
                kind.value,
            )

    async def delete_package(self, skill_id: str, version: str) -> bool:
        """Delete a package row; False if there was none."""
        with translate_errors(skill_id):
            status = await self._db.execute(DELETE_PACKAGE, skill_id, version)
        return status != "DELETE 0"

    async def delete_skill_packages(self, skill_id: str) -> int:
        """Delete every package row of a skill (and its current version); returns the count."""
        with translate_errors(skill_id):
            status = await self._db.execute(DELETE_SKILL_PACKAGES, skill_id)
        return int(status.split()[-1])

    async def list_activations(self, skill_id: str) -> list[tuple[str, str | None, OperationType]]:
        """The activation history, newest first: (version, previous version, kind)."""
        with translate_errors(skill_id):
            rows = await self._db.fetch(LIST_ACTIVATIONS, skill_id)
        return [(r["version"], r["previous_version"], OperationType(r["kind"])) for r in rows]

    async def blob_in_use(self, sha256: str) -> bool:
        """True while some package (any state) has this archive as its original."""
        with translate_errors():
            return bool(await self._db.fetchval(BLOB_IN_USE, sha256))

    async def list_current_versions(self) -> list[tuple[str, str | None]]:
        """Every skill with its current version (None when it has none)."""
        with translate_errors():
            rows = await self._db.fetch(LIST_CURRENT_VERSIONS)
        return [(r["skill_id"], r["current_version"]) for r in rows]

    # -- server processes -------------------------------------------------------------

    async def register_instance(self, instance_id: str, hostname: str, pid: int) -> None:
        """Announce a starting process."""
        with translate_errors():
            await self._db.execute(REGISTER_INSTANCE, instance_id, hostname, pid)

    async def heartbeat(self, instance_id: str) -> None:
        """Tell the others this process is alive."""
        with translate_errors():
            await self._db.execute(HEARTBEAT, instance_id)

    async def list_instances(self, stale_after_seconds: float) -> list[Instance]:
        """Every registered process, flagged stale past the bound."""
        with translate_errors():
            rows = await self._db.fetch(LIST_INSTANCES, stale_after_seconds)
        return [Instance(r["instance_id"], r["hostname"], r["pid"], r["stale"]) for r in rows]

    async def delete_instances(self, instance_ids: Sequence[str]) -> None:
        """Forget processes known to be gone."""
        with translate_errors():
            await self._db.execute(DELETE_INSTANCES, list(instance_ids))


class Database:
    """The connection pool, and transactions over it."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url
        """The URL the pool connects to (dedicated connections such as LISTEN use it)."""
        self.repo = Repository(_Discarding(pool))
        self.after_commit: Callable[[], None] | None = None
        """Called once each transaction's COMMIT has been sent (even if it failed: the
        outcome may be unknown), so caches of this process drop what it may have changed."""

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Repository]:
        """A repository bound to one connection inside one transaction.

        Only the database's own steps (acquire, begin, commit, rollback) are
        translated here; the repository translates its statements. Whatever else the
        block raises (a store error, say) leaves unchanged. A connection that saw a
        connection-level error, or whose block was cancelled, is discarded.
        """
        with translate_errors():
            conn = await self.pool.acquire()
        discard = False
        try:
            tx = conn.transaction()
            with translate_errors():
                await tx.start()
            try:
                yield Repository(conn)
            except BaseException as exc:
                # A cancelled block may have cut a statement off half-way.
                discard = not isinstance(exc, Exception) or is_connection_error(_root(exc))
                if not discard:
                    try:
                        await tx.rollback()
                    except Exception as rollback_error:
                        logger.warning(
                            "rollback failed; discarding the connection: %s", rollback_error
                        )
                        discard = True
                raise
            try:
                with translate_errors():
                    await tx.commit()
            except BaseException:
                discard = True
                raise
            finally:
                if self.after_commit is not None:
                    self.after_commit()
        except BaseException as exc:
            discard = discard or not isinstance(exc, Exception) or is_connection_error(_root(exc))
            raise
        finally:
            if discard:
                _discard(conn)
            await self.pool.release(conn)

    async def close(self) -> None:
        """Close every connection, waiting for the ones in use up to a bound."""
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except TimeoutError:
            self.pool.terminate()
