"""The domain error tree.

Every error the service raises on purpose is a :class:`SkillsvcError`; each class
names the gRPC status it becomes and a stable machine-readable ``reason`` (used as
the ``google.rpc.ErrorInfo`` reason). The mapping to gRPC happens in exactly one
place, ``skillsvc.api._errors``; this module imports no gRPC so the domain, the
validator and the repository can raise these freely.

    SkillsvcError
    ├── InvalidArgument        INVALID_ARGUMENT     (carries field violations)
    ├── NotFound               NOT_FOUND
    ├── AlreadyExists          ALREADY_EXISTS
    ├── FailedPrecondition     FAILED_PRECONDITION
    ├── Aborted                ABORTED
    ├── Cancelled              CANCELLED
    ├── ResourceExhausted      RESOURCE_EXHAUSTED   (carries quota violations)
    ├── OutOfRange             OUT_OF_RANGE
    ├── Unauthenticated        UNAUTHENTICATED
    ├── PermissionDenied       PERMISSION_DENIED
    ├── Unavailable            UNAVAILABLE
    ├── DataLoss               DATA_LOSS            (stored bytes no longer hash right)
    └── Internal               INTERNAL
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

# Reasons that code outside the raising module matches on: named once, here.
STORE_FULL_REASON: Final = "STORE_FULL"
"""The file store's (or the spool's) filesystem is full (``ResourceExhausted``)."""
STORE_UNAVAILABLE_REASON: Final = "STORE_UNAVAILABLE"
"""The file store's filesystem failed otherwise (``Unavailable``)."""
BLOB_STORE_UNAVAILABLE_REASON: Final = "BLOB_STORE_UNAVAILABLE"
"""The blob store (a bucket) does not answer or refuses the credentials (``Unavailable``)."""
ARCHIVE_MISSING_REASON: Final = "ARCHIVE_MISSING"
"""An object is not in the blob store (``NotFound``)."""
BLOB_CORRUPT_REASON: Final = "BLOB_CORRUPT"
"""An object's bytes no longer hash to its name, or it is bigger than recorded (``DataLoss``)."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, as in ``google.rpc.BadRequest.FieldViolation``."""

    field: str
    """Path of the field in the request, e.g. ``definition.skill_id``."""
    description: str
    """What is wrong with it, for a human."""


@dataclass(frozen=True)
class QuotaViolation:
    """One exceeded quota, as in ``google.rpc.QuotaFailure.Violation``."""

    subject: str
    """What the quota applies to, e.g. ``tenant:acme``."""
    description: str
    """Which limit was reached, for a human."""


class SkillsvcError(Exception):
    """Base of every deliberate error. ``status`` names a ``grpc.StatusCode`` member."""

    status: ClassVar[str] = "INTERNAL"
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(SkillsvcError):
    """A request field is malformed; ``violations`` say which and why."""

    status = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """The common case: exactly one bad field."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


class NotFound(SkillsvcError):
    """The named resource does not exist (or the caller may not know it does)."""

    status = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(SkillsvcError):
    """The resource exists already and may not be replaced."""

    status = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(SkillsvcError):
    """The system is not in a state that allows the request."""

    status = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class Aborted(SkillsvcError):
    """A concurrent request on the same resource won; retrying may succeed."""

    status = "ABORTED"
    default_reason = "ABORTED"


class Cancelled(SkillsvcError):
    """The caller gave up (e.g. cancelled an upload) before the work was done."""

    status = "CANCELLED"
    default_reason = "CANCELLED"


class ResourceExhausted(SkillsvcError):
    """A size limit, quota or queue is full."""

    status = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        violations: Sequence[QuotaViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: tuple[QuotaViolation, ...] = tuple(violations)


class OutOfRange(SkillsvcError):
    """A position outside what is kept (a WatchSkills ``since`` older than the history)."""

    status = "OUT_OF_RANGE"
    default_reason = "OUT_OF_RANGE"


class Unauthenticated(SkillsvcError):
    """No credentials, or credentials that do not verify."""

    status = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(SkillsvcError):
    """The caller is known but its role may not do this."""

    status = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class Unavailable(SkillsvcError):
    """The database, the file store or the blob store does not answer; retry later."""

    status = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


class DataLoss(SkillsvcError):
    """Stored bytes are damaged (an archive no longer hashes to its name)."""

    status = "DATA_LOSS"
    default_reason = "DATA_LOSS"


class Internal(SkillsvcError):
    """A bug or an unexpected state; details are logged, not sent."""

    status = "INTERNAL"
    default_reason = "INTERNAL"
