"""Rows in and out: database rows as the frozen dataclasses of :mod:`skillsvc.core.models`,
and the parameter objects of writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skillsvc.core.models import (
    Definition,
    Operation,
    OperationError,
    OperationState,
    OperationType,
    Package,
    PackageState,
    SourceType,
    Stage,
)


def definition_of(row: Any) -> Definition:
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


def operation_of(row: Any) -> Operation:
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


def package_of(row: Any) -> Package:
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
class VersionChoice:
    """What choosing a version for a versionless upload needs, read under the skill's lock."""

    identical: str | None
    """A READY version of the skill with the same archive digest, if any."""
    versions: list[str]
    """Every version the skill has or had."""
    live_versions: int
    """How many versions count against the skill's quota (all but FAILED)."""


@dataclass(frozen=True)
class VersionClaim:
    """An install's claim on a new version of a skill, within the skill's quota."""

    skill_id: str
    version: str
    source_type: SourceType
    source_uri: str
    operation_id: str
    """The install that claims it."""
    max_live_versions: int
    """The quota: how many versions that are not FAILED the skill may have."""


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
    bytes_done: int = 0
    """Bytes already there (a retry of an upload starts with every byte kept)."""


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


@dataclass(frozen=True)
class SkillSync:
    """What a node needs to bring its local copy of one skill in line with the database."""

    current_version: str | None
    """The version ``current`` must point at; None when the skill has none."""
    sha256: str
    """The current package's archive digest (empty unless it is READY)."""
    size_bytes: int
    """The current package's archive size."""
    unpacked_bytes: int
    """The current package's extracted size."""
    file_count: int
    """The current package's number of files."""
    change_age_seconds: float | None
    """Seconds since the latest activation, by the database's clock (None if none)."""
    versions: frozenset[str]
    """Every version the skill has a row for, in any state."""
