"""The repository (named queries, one method each) and transactions over the pool.

The repository is the database boundary: asyncpg exceptions never leave it (see
``_driver``). The SQL lives in ``_queries``; rows come out through ``_rows`` as the
frozen dataclasses of :mod:`skillsvc.core.models`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from skillsvc.core.models import (
    Definition,
    DefinitionChanges,
    Operation,
    OperationType,
    Package,
    PackageState,
    SourceType,
)
from skillsvc.db import _queries as sql
from skillsvc.db._driver import (
    Discarding,
    Executor,
    discard_connection,
    is_connection_error,
    root_error,
    translate_errors,
)
from skillsvc.db._events import EventLog
from skillsvc.db._listener import CATALOG_CHANNEL
from skillsvc.db._quota_queries import (
    COUNT_TENANT_DEFINITIONS,
    LOCK_TENANT,
)
from skillsvc.db._rows import (
    Instance,
    NewOperation,
    OperationChanges,
    SkillSync,
    VersionChoice,
    VersionClaim,
    definition_of,
    operation_of,
    package_of,
)
from skillsvc.db._version_queries import VERSION_CHOICE
from skillsvc.errors import Aborted, Unavailable

logger = logging.getLogger(__name__)

__all__ = [
    "Database",
    "Instance",
    "NewOperation",
    "OperationChanges",
    "Repository",
    "SkillSync",
    "VersionChoice",
    "VersionClaim",
    "translate_errors",
]


class Repository:
    """Named queries over a pool (each call on its own) or one connection (a transaction)."""

    def __init__(self, executor: Executor) -> None:
        self._db = executor

    async def ping(self) -> None:
        """Round-trip to the database; raises Unavailable when it does not answer."""
        with translate_errors():
            await self._db.fetchval(sql.PING)

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
                sql.INSERT_DEFINITION, skill_id, tenant, display_name, description, active, public
            )
        return definition_of(row)

    async def get_definition(self, skill_id: str, visible_to: str | None) -> Definition | None:
        """The definition if it exists and ``visible_to`` (a tenant, None = all) sees it."""
        with translate_errors(skill_id):
            row = await self._db.fetchrow(sql.GET_DEFINITION, skill_id, visible_to)
        return None if row is None else definition_of(row)

    async def list_definitions(
        self, visible_to: str | None, *, include_inactive: bool, after: str, limit: int
    ) -> list[Definition]:
        """Up to ``limit`` visible definitions with ``skill_id > after``, by id."""
        with translate_errors():
            rows = await self._db.fetch(
                sql.LIST_DEFINITIONS, visible_to, include_inactive, after, limit
            )
        return [definition_of(r) for r in rows]

    async def update_definition(
        self, skill_id: str, changes: DefinitionChanges
    ) -> Definition | None:
        """Apply ``changes``; None if the definition does not exist."""
        with translate_errors(skill_id):
            row = await self._db.fetchrow(
                sql.UPDATE_DEFINITION,
                skill_id,
                changes.display_name,
                changes.description,
                changes.active,
                changes.public,
            )
        return None if row is None else definition_of(row)

    async def delete_definition(self, skill_id: str) -> bool:
        """Delete the definition; False if it did not exist. FailedPrecondition with packages."""
        with translate_errors(skill_id):
            status = await self._db.execute(sql.DELETE_DEFINITION, skill_id)
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

    # -- version assignment (SQL in _version_queries) --------------------------------

    async def version_choice(self, skill_id: str, sha256: str) -> VersionChoice:
        """Take the skill's lock (until the transaction ends), then read what choosing a
        version for an upload of ``sha256`` needs. Call it inside a transaction."""
        with translate_errors(skill_id):
            row = await self._db.fetchrow(VERSION_CHOICE, skill_id, sha256)
        assert row is not None  # one row, always
        return VersionChoice(
            identical=row["identical"],
            versions=[str(v) for v in row["versions"]],
            live_versions=int(row["live_versions"]),
        )

    # -- operations -----------------------------------------------------------------

    async def insert_operation(self, op: NewOperation) -> tuple[Operation, bool]:
        """Record an operation; with a request_id already used, the earlier one and False."""
        with translate_errors(op.skill_id):
            row = await self._db.fetchrow(sql.INSERT_OPERATION, *_operation_args(op))
            if row is not None:
                return operation_of(row), True
            row = await self._db.fetchrow(
                sql.GET_OPERATION_BY_REQUEST_ID, op.skill_id, op.request_id
            )
        if row is None:  # the conflicting row was deleted in between; extremely unlikely
            raise Unavailable("concurrent request with the same request_id, retry")
        return operation_of(row), False

    async def insert_managed_operation(
        self, op: NewOperation, tenant: str | None
    ) -> Operation | None:
        """Record ``op`` if its skill's definition exists and, unless ``tenant`` is None,
        belongs to ``tenant``; None when nothing was recorded (no such definition,
        another tenant's, or a request_id already used: the caller finds out which)."""
        with translate_errors(op.skill_id):
            row = await self._db.fetchrow(
                sql.INSERT_MANAGED_OPERATION, *_operation_args(op), tenant
            )
        return None if row is None else operation_of(row)

    async def get_operation(self, operation_id: str, visible_to: str | None) -> Operation | None:
        """The operation if it exists and its skill is visible to ``visible_to``."""
        with translate_errors():
            row = await self._db.fetchrow(sql.GET_OPERATION, uuid.UUID(operation_id), visible_to)
        return None if row is None else operation_of(row)

    async def list_operations(
        self, skill_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Operation]:
        """A skill's operations, newest first, after position ``after``."""
        with translate_errors():
            rows = await self._db.fetch(
                sql.LIST_OPERATIONS,
                skill_id,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
        return [operation_of(r) for r in rows]

    async def update_operation(self, operation_id: str, changes: OperationChanges) -> Operation:
        """Apply ``changes``, bump ``seq`` and notify progress watchers."""
        error = changes.error
        with translate_errors():
            row = await self._db.fetchrow(
                sql.UPDATE_OPERATION,
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
                sql.PROGRESS_CHANNEL,
            )
        if row is None:
            raise Aborted(
                f"operation {operation_id} has already ended (or was reaped as interrupted)",
                reason="OPERATION_ENDED",
            )
        return operation_of(row)

    async def reap_operations(self, owners: Sequence[str]) -> list[Operation]:
        """Fail the unfinished operations of dead ``owners``; returns them."""
        with translate_errors():
            rows = await self._db.fetch(sql.REAP_OPERATIONS, list(owners), sql.PROGRESS_CHANNEL)
        return [operation_of(r) for r in rows]

    async def unfinished_owners(self) -> list[str]:
        """Owners of operations still PENDING or RUNNING."""
        with translate_errors():
            return [r["owner"] for r in await self._db.fetch(sql.UNFINISHED_OWNERS)]

    # -- packages -------------------------------------------------------------------

    async def lock_skill(self, skill_id: str) -> None:
        """Serialise with every other change to this skill, until the transaction ends."""
        with translate_errors():
            await self._db.execute(sql.LOCK_SKILL, skill_id)

    async def lock_blob(self, sha256: str) -> None:
        """Serialise with other users of this archive digest, until the transaction ends."""
        with translate_errors():
            await self._db.execute(sql.LOCK_BLOB, sha256)

    async def lock_skill_and_blob(self, skill_id: str, sha256: str) -> None:
        """:meth:`lock_skill` then :meth:`lock_blob`, in one statement."""
        with translate_errors():
            await self._db.execute(sql.LOCK_SKILL_AND_BLOB, skill_id, sha256)

    async def get_package_for_update(self, skill_id: str, version: str) -> Package | None:
        """The package row, locked for this transaction."""
        with translate_errors():
            row = await self._db.fetchrow(sql.GET_PACKAGE_FOR_UPDATE, skill_id, version)
        return None if row is None else package_of(row)

    async def claim_version(self, claim: VersionClaim) -> bool:
        """Claim a version that has no row, within the quota, and name it on the operation,
        in one statement of its own.

        Takes the skill's lock itself: call it outside a transaction. False when
        anything else is the case; :meth:`claim_new_package` in a transaction then
        reads what is there.
        """
        with translate_errors(claim.skill_id):
            claimed = await self._db.fetchval(sql.CLAIM_VERSION, *_claim_args(claim))
        return bool(claimed)

    async def claim_new_package(self, claim: VersionClaim) -> tuple[Package | None, int, bool]:
        """Claim the version if it has no row and the quota allows.

        Returns the version's row as it was (locked) if any, how many live versions the
        skill had, and whether the row was created (INSTALLING). Call it holding the
        skill's lock; when it returns False, the caller decides from what was read.
        """
        with translate_errors(claim.skill_id):
            row = await self._db.fetchrow(sql.CLAIM_NEW_PACKAGE, *_claim_args(claim))
        assert row is not None  # one row, always
        package = None if row["skill_id"] is None else package_of(row)
        return package, int(row["live_versions"]), int(row["claimed"]) == 1

    async def get_package(
        self, skill_id: str, version: str, visible_to: str | None
    ) -> Package | None:
        """The package if it exists and its skill is visible."""
        with translate_errors():
            row = await self._db.fetchrow(sql.GET_PACKAGE, skill_id, version, visible_to)
        return None if row is None else package_of(row)

    async def get_package_or_current(
        self, skill_id: str, version: str | None, visible_to: str | None
    ) -> Package | None:
        """The package (None version: the current one) if it exists and is visible."""
        with translate_errors():
            row = await self._db.fetchrow(sql.GET_PACKAGE_OR_CURRENT, skill_id, version, visible_to)
        return None if row is None else package_of(row)

    async def list_packages(
        self, skill_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Package]:
        """A skill's packages, newest first, after position ``after``."""
        with translate_errors():
            rows = await self._db.fetch(
                sql.LIST_PACKAGES,
                skill_id,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
        return [package_of(r) for r in rows]

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
                sql.UPSERT_PACKAGE_CLAIM,
                skill_id,
                version,
                state.value,
                source_type.value,
                source_uri,
                uuid.UUID(operation_id),
            )

    async def mark_package_ready_and_done(
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
        make_current: bool,
        message: str,
    ) -> bool:
        """Record the committed package as READY (and current, recording the install's
        activation, if ``make_current``) and end ``operation_id`` as SUCCEEDED/DONE with
        ``message``, notifying its watchers; False (nothing written) if the claim was lost.

        Raises ABORTED when the claim held but the operation had already ended, as
        :meth:`update_operation` does.
        """
        with translate_errors(skill_id):
            row = await self._db.fetchrow(
                sql.MARK_PACKAGE_READY_AND_DONE,
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
                make_current,
                message,
                sql.PROGRESS_CHANNEL,
                CATALOG_CHANNEL,
            )
        assert row is not None  # an aggregate row, always
        if int(row["readied"]) != 1:
            return False
        if int(row["finished"]) != 1:
            raise Aborted(
                f"operation {operation_id} has already ended (or was reaped as interrupted)",
                reason="OPERATION_ENDED",
            )
        return True

    async def mark_package_failed(self, skill_id: str, version: str, operation_id: str) -> None:
        """Release ``operation_id``'s claim on a version that did not become READY."""
        with translate_errors(skill_id):
            await self._db.execute(
                sql.MARK_PACKAGE_FAILED, skill_id, version, uuid.UUID(operation_id)
            )

    async def delete_failed_package(self, skill_id: str, version: str) -> bool:
        """Delete a FAILED package row (garbage collection); False if there was none."""
        with translate_errors(skill_id):
            status = await self._db.execute(sql.DELETE_FAILED_PACKAGE, skill_id, version)
        return str(status) == "DELETE 1"

    async def package_files(self, skill_id: str, version: str) -> list[dict[str, Any]]:
        """The per-file digests recorded at install."""
        with translate_errors(skill_id):
            files = await self._db.fetchval(sql.GET_PACKAGE_FILES, skill_id, version)
        return list(files or [])

    async def set_current_version(
        self, skill_id: str, version: str, operation_id: str | None, kind: OperationType
    ) -> None:
        """Make ``version`` current and record the activation."""
        with translate_errors(skill_id):
            await self._db.execute(
                sql.SET_CURRENT_VERSION,
                skill_id,
                version,
                None if operation_id is None else uuid.UUID(operation_id),
                kind.value,
            )

    async def delete_package(self, skill_id: str, version: str) -> bool:
        """Delete a package row; False if there was none."""
        with translate_errors(skill_id):
            status = await self._db.execute(sql.DELETE_PACKAGE, skill_id, version)
        return status != "DELETE 0"

    async def delete_skill_packages(self, skill_id: str) -> int:
        """Delete every package row of a skill (and its current version); returns the count."""
        with translate_errors(skill_id):
            status = await self._db.execute(sql.DELETE_SKILL_PACKAGES, skill_id)
        return int(status.split()[-1])

    async def list_activations(self, skill_id: str) -> list[tuple[str, str | None, OperationType]]:
        """The activation history, newest first: (version, previous version, kind)."""
        with translate_errors(skill_id):
            rows = await self._db.fetch(sql.LIST_ACTIVATIONS, skill_id)
        return [(r["version"], r["previous_version"], OperationType(r["kind"])) for r in rows]

    async def blob_in_use(self, sha256: str) -> bool:
        """True while some package (any state) has this archive as its original."""
        with translate_errors():
            return bool(await self._db.fetchval(sql.BLOB_IN_USE, sha256))

    async def list_current_versions(self) -> list[tuple[str, str | None, str]]:
        """Every skill with its current version (None when it has none) and that
        version's archive digest (empty unless it is READY)."""
        with translate_errors():
            rows = await self._db.fetch(sql.LIST_CURRENT_VERSIONS)
        return [(r["skill_id"], r["current_version"], r["sha256"] or "") for r in rows]

    async def skill_sync_state(self, skill_id: str) -> SkillSync | None:
        """What the local store must hold for ``skill_id``; None if the skill is gone."""
        with translate_errors(skill_id):
            row = await self._db.fetchrow(sql.SKILL_SYNC_STATE, skill_id)
        if row is None:
            return None
        return SkillSync(
            current_version=row["current_version"],
            sha256=row["sha256"] or "",
            size_bytes=row["size_bytes"] or 0,
            unpacked_bytes=row["unpacked_bytes"] or 0,
            file_count=row["file_count"] or 0,
            change_age_seconds=row["change_age"],
            versions=frozenset(row["versions"]),
        )

    # -- server processes -------------------------------------------------------------

    async def register_instance(self, instance_id: str, hostname: str, pid: int) -> None:
        """Announce a starting process."""
        with translate_errors():
            await self._db.execute(sql.REGISTER_INSTANCE, instance_id, hostname, pid)

    async def heartbeat(self, instance_id: str) -> None:
        """Tell the others this process is alive."""
        with translate_errors():
            await self._db.execute(sql.HEARTBEAT, instance_id)

    async def list_instances(self, stale_after_seconds: float) -> list[Instance]:
        """Every registered process, flagged stale past the bound."""
        with translate_errors():
            rows = await self._db.fetch(sql.LIST_INSTANCES, stale_after_seconds)
        return [Instance(r["instance_id"], r["hostname"], r["pid"], r["stale"]) for r in rows]

    async def delete_instances(self, instance_ids: Sequence[str]) -> None:
        """Forget processes known to be gone."""
        with translate_errors():
            await self._db.execute(sql.DELETE_INSTANCES, list(instance_ids))


def _claim_args(claim: VersionClaim) -> tuple[Any, ...]:
    """CLAIM_VERSION's and CLAIM_NEW_PACKAGE's parameters $1 to $6."""
    return (
        claim.skill_id,
        claim.version,
        claim.source_type.value,
        claim.source_uri,
        uuid.UUID(claim.operation_id),
        claim.max_live_versions,
    )


def _operation_args(op: NewOperation) -> tuple[Any, ...]:
    """INSERT_OPERATION's parameters $1 to $23."""
    return (
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
        op.bytes_done,
    )


class Database:
    """The connection pool, and transactions over it."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url
        """The URL the pool connects to (dedicated connections such as LISTEN use it)."""
        self.repo = Repository(Discarding(pool))
        self.events = EventLog(Discarding(pool))
        """The change log behind WatchSkills."""
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
                discard = not isinstance(exc, Exception) or is_connection_error(root_error(exc))
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
            discard = (
                discard or not isinstance(exc, Exception) or is_connection_error(root_error(exc))
            )
            raise
        finally:
            if discard:
                discard_connection(conn)
            await self.pool.release(conn)

    async def close(self) -> None:
        """Close every connection, waiting for the ones in use up to a bound."""
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except TimeoutError:
            self.pool.terminate()
