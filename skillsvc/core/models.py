"""Domain records: what the repository returns and the domain layer works with.

Plain frozen dataclasses, free of asyncpg records and protobuf messages; the API
layer converts them to and from the wire.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Caller:
    """Who is calling: from the verified token, or the anonymous admin of auth=none."""

    subject: str
    """The token's ``sub``; ``anonymous`` without authentication."""
    tenant: str
    """The caller's tenant; empty for platform callers."""
    roles: frozenset[str]
    """Any of ``admin``, ``publisher``, ``reader``."""
    expires_at: float | None = None
    """When the credentials stop being accepted (the token's ``exp`` plus the leeway,
    seconds since the epoch); None when they do not expire. Streams that outlive the
    check at their start end then (WatchSkills)."""

    @property
    def is_admin(self) -> bool:
        """Admins see and manage everything."""
        return "admin" in self.roles

    @property
    def visible_tenant(self) -> str | None:
        """The tenant filter of reads: None lets admins see every tenant's skills."""
        return None if self.is_admin else self.tenant


ANONYMOUS_ADMIN = Caller(subject="anonymous", tenant="", roles=frozenset({"admin"}))
"""The caller of every RPC when ``SKILLSVC_AUTH=none``."""


@dataclass(frozen=True)
class Definition:
    """A skill definition (the management layer)."""

    skill_id: str
    """Immutable id; follows the package ``name`` rule."""
    tenant: str
    """Owning tenant; empty for a platform definition."""
    display_name: str
    """Human-readable name."""
    description: str
    """What the skill does."""
    active: bool
    """Whether the skill is offered to agents."""
    public: bool
    """Whether other tenants may see it."""
    current_version: str | None
    """The current package version, if any."""
    create_time: datetime
    """When it was created."""
    update_time: datetime
    """When it last changed."""


@dataclass(frozen=True)
class DefinitionChanges:
    """The updatable fields of a definition; ``None`` leaves a field unchanged."""

    display_name: str | None = None
    """New display name."""
    description: str | None = None
    """New description."""
    active: bool | None = None
    """New active flag."""
    public: bool | None = None
    """New public flag."""


class OperationType(enum.StrEnum):
    """Kind of operation (the ``type`` column)."""

    INSTALL = "INSTALL"
    ROLLBACK = "ROLLBACK"


class OperationState(enum.StrEnum):
    """Lifecycle of an operation."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """True once the operation can no longer change."""
        return self in {OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED}


class Stage(enum.StrEnum):
    """Install stages, in order."""

    QUEUED = "QUEUED"
    RECEIVING = "RECEIVING"
    DOWNLOADING = "DOWNLOADING"
    VERIFYING = "VERIFYING"
    EXTRACTING = "EXTRACTING"
    VALIDATING = "VALIDATING"
    COMMITTING = "COMMITTING"
    ACTIVATING = "ACTIVATING"
    DONE = "DONE"
    FAILED = "FAILED"


class PackageState(enum.StrEnum):
    """Lifecycle of a package version."""

    PENDING = "PENDING"
    INSTALLING = "INSTALLING"
    READY = "READY"
    FAILED = "FAILED"


class SourceType(enum.StrEnum):
    """Where a package's bytes come from."""

    UPLOAD = "UPLOAD"
    URL = "URL"


@dataclass(frozen=True)
class OperationError:
    """Why an operation failed."""

    code: str
    """gRPC status code name, e.g. ``INVALID_ARGUMENT``."""
    reason: str
    """Stable machine-readable reason, e.g. ``VALIDATION_FAILED``."""
    message: str
    """Human-readable message."""
    details: Mapping[str, Any] | None = None
    """Structured details (a validation report under ``validation_report``)."""


@dataclass(frozen=True)
class Operation:
    """One entry of the install log."""

    operation_id: str
    """UUID, as text."""
    type: OperationType
    """Install or rollback."""
    skill_id: str
    """The skill."""
    version: str
    """The version installed (or rolled back to); empty until known."""
    state: OperationState
    """Lifecycle state."""
    stage: Stage
    """Install stage reached."""
    from_version: str
    """Rollbacks: the previous current version."""
    to_version: str
    """Rollbacks: the new current version."""
    reason: str
    """Rollbacks: the caller's reason."""
    attempt: int
    """1, or n + 1 for a retry of attempt n."""
    retry_of: str | None
    """The operation this retries."""
    error: OperationError | None
    """Set when failed."""
    bytes_done: int
    """Bytes received or downloaded."""
    bytes_total: int
    """Bytes expected, 0 if unknown."""
    requested_by: str
    """The caller's subject."""
    source_type: SourceType | None
    """Installs: upload or URL."""
    source_uri: str
    """Installs from a URL: the URL."""
    expected_sha256: str
    """Installs: the digest the caller declared, if any."""
    activate: bool
    """Installs: make current when done."""
    request_id: str
    """Installs: the idempotency key."""
    archive_sha256: str
    """Installs: digest of the bytes received."""
    owner: str
    """Instance id of the process running it."""
    message: str
    """Last progress message."""
    seq: int
    """Change counter; grows by one with every update."""
    requested_version: str
    """Installs: the version the caller asked for (empty: from the manifest)."""
    create_time: datetime
    """When recorded."""
    update_time: datetime
    """When last changed."""


@dataclass(frozen=True)
class Package:
    """One installed (or installing, or failed) version of a skill."""

    skill_id: str
    """The skill."""
    version: str
    """The version."""
    state: PackageState
    """Lifecycle state."""
    current: bool
    """Whether it is the skill's current version."""
    sha256: str
    """Digest of the original archive."""
    size_bytes: int
    """Archive size."""
    unpacked_bytes: int
    """Extracted size."""
    file_count: int
    """Number of files."""
    source_type: SourceType
    """Upload or URL."""
    source_uri: str
    """The URL, for URL sources."""
    manifest: Mapping[str, Any]
    """The manifest as stored (JSON object)."""
    path: str
    """Installed directory, once READY."""
    operation_id: str | None
    """The operation that holds or last held this version."""
    create_time: datetime
    """When recorded."""
    update_time: datetime
    """When last changed."""


@dataclass(frozen=True)
class Change:
    """One change of an operation, as announced to progress watchers."""

    operation_id: str
    """The operation."""
    seq: int
    """Its change counter after this change."""
    state: OperationState
    """New state."""
    stage: Stage
    """New stage."""
    bytes_done: int
    """Progress."""
    bytes_total: int
    """Expected total."""
    message: str
    """Progress message."""
    time: datetime
    """When it changed."""
    version: str = ""
    """The version being installed, once known."""


class SkillEventType(enum.StrEnum):
    """What a change-log entry says happened (the ``skill_events.type`` column)."""

    DEFINITION_CREATED = "DEFINITION_CREATED"
    DEFINITION_UPDATED = "DEFINITION_UPDATED"
    DEFINITION_DELETED = "DEFINITION_DELETED"
    PACKAGE_READY = "PACKAGE_READY"
    PACKAGE_DELETED = "PACKAGE_DELETED"
    CURRENT_CHANGED = "CURRENT_CHANGED"


@dataclass(frozen=True)
class SkillEvent:
    """One published entry of the change log that WatchSkills streams."""

    seq: int
    """Its position: dense from 1, in publication order."""
    skill_id: str
    """The skill that changed."""
    tenant: str
    """The definition's owner when the change was made ('' = platform)."""
    public: bool
    """Whether the definition was visible to other tenants then."""
    type: SkillEventType
    """What happened."""
    version: str
    """Package events: the version; CURRENT_CHANGED: the new current version."""
    from_version: str
    """CURRENT_CHANGED: the version current before ('' = none)."""
    to_version: str
    """CURRENT_CHANGED: the version current after ('' = none)."""
    time: datetime
    """When the writing transaction made the change."""
    narrows: bool = False
    """The change hid the skill from some callers (public -> private): its earlier
    events were re-tagged as private in the same transaction (migration 0009)."""

    def visible_to(self, tenant: str | None) -> bool:
        """The rule of every read (SPEC §7): None (admins) sees all."""
        return tenant is None or self.tenant == tenant or self.public


@dataclass(frozen=True)
class EventWindow:
    """A page of the change log after some position, read from one snapshot."""

    head: int
    """The highest published seq (0 before the first event)."""
    oldest: int | None
    """The lowest seq still retained; None when none is."""
    events: list[SkillEvent]
    """Up to the asked number of (matching) events after the position, by seq."""
