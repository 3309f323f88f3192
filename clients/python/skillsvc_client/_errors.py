"""The exceptions the client raises, mapped from gRPC statuses through one table.

::

    SkillsvcError                 any failed call; .code, .reason, .message, details
     ├── InvalidArgument          INVALID_ARGUMENT (.field_violations)
     │    └── OutOfRange          OUT_OF_RANGE (a WatchSkills since the server no
     │                            longer keeps: list again, watch from now)
     ├── NotFound                 NOT_FOUND
     ├── AlreadyExists            ALREADY_EXISTS
     ├── FailedPrecondition       FAILED_PRECONDITION, ABORTED
     ├── PermissionDenied         PERMISSION_DENIED, UNAUTHENTICATED
     ├── ResourceExhausted        RESOURCE_EXHAUSTED
     ├── Unavailable              UNAVAILABLE, DEADLINE_EXCEEDED
     └── InstallFailed            an install or retry ended FAILED (.operation, .report)
    LocalError                    bad input found before anything was sent (a missing
                                  file, a folder without SKILL.md, a digest mismatch)

The server sends rich details in ``grpc-status-details-bin`` (a ``google.rpc.Status``):
``ErrorInfo`` gives the stable :attr:`SkillsvcError.reason`, ``BadRequest`` the
:attr:`~SkillsvcError.field_violations`, and a failed validation carries its
``ValidationReport`` (:attr:`~SkillsvcError.report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import grpc
from google.rpc import error_details_pb2, status_pb2

from skillsvc_client.v1 import resources_pb2

_DETAILS_KEY: Final = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    """The field's path in the request, e.g. ``spec.skill_id``."""
    description: str
    """What is wrong with it."""


class LocalError(Exception):
    """Bad input noticed on this side, before any byte was sent."""


class SkillsvcError(Exception):
    """A call the server answered with an error status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        field_violations: Sequence[FieldViolation] = (),
        report: resources_pb2.ValidationReport | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        """The gRPC status code."""
        self.message = message
        """The server's message."""
        self.reason = reason
        """The stable ``ErrorInfo.reason`` (``""`` when the server sent none)."""
        self.field_violations = tuple(field_violations)
        """The ``BadRequest`` field violations, if any."""
        self.report = report
        """The ``ValidationReport`` of a package that failed validation, if any."""

    def __str__(self) -> str:
        return describe(self)


class InvalidArgument(SkillsvcError):
    """The request was malformed; see :attr:`field_violations`."""


class OutOfRange(InvalidArgument):
    """A position outside what the server keeps (WatchSkills ``since``): re-list."""


class NotFound(SkillsvcError):
    """The skill, version or operation does not exist (or is not visible to the caller)."""


class AlreadyExists(SkillsvcError):
    """The id is taken, or the version is installed with different content."""


class FailedPrecondition(SkillsvcError):
    """The resource is not in a state that allows the call (or a concurrent call won)."""


class PermissionDenied(SkillsvcError):
    """The caller is not authenticated, or its role may not act."""


class ResourceExhausted(SkillsvcError):
    """A size limit, quota or the install queue is full."""


class Unavailable(SkillsvcError):
    """The server could not be reached or did not answer in time (retries exhausted)."""


class InstallFailed(SkillsvcError):
    """An install (or retry) ran and ended ``FAILED``; :attr:`operation` tells why."""

    def __init__(self, operation: resources_pb2.Operation) -> None:
        error = operation.error
        info = _decode_details(error)
        code = _CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
        super().__init__(
            code,
            error.message or "install failed",
            reason=info.reason,
            field_violations=info.violations,
            report=info.report,
        )
        self.operation = operation
        """The failed operation, as the server recorded it."""


_CLASS_BY_CODE: Final[dict[grpc.StatusCode, type[SkillsvcError]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}
_CODE_BY_NUMBER: Final = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class _Details:
    reason: str = ""
    violations: tuple[FieldViolation, ...] = ()
    report: resources_pb2.ValidationReport | None = None


def _decode_details(status: status_pb2.Status) -> _Details:
    reason = ""
    violations: list[FieldViolation] = []
    report: resources_pb2.ValidationReport | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(resources_pb2.ValidationReport.DESCRIPTOR):
            report = resources_pb2.ValidationReport()
            detail.Unpack(report)
    return _Details(reason, tuple(violations), report)


def from_rpc_error(error: grpc.RpcError) -> SkillsvcError:
    """The :class:`SkillsvcError` for a failed call, with its rich details decoded."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    details = _Details()
    trailers = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a garbled trailer leaves the plain status
                break
            if status.code == code.value[0]:
                details = _decode_details(status)
            break
    cls = _CLASS_BY_CODE.get(code, SkillsvcError)
    return cls(
        code,
        message,
        reason=details.reason,
        field_violations=details.violations,
        report=details.report,
    )


def error_violations(report: resources_pb2.ValidationReport | None) -> list[str]:
    """The report's errors as ``CODE path: message`` strings (warnings left out)."""
    if report is None:
        return []
    return [
        f"{v.code} {v.path}: {v.message}" if v.path else f"{v.code}: {v.message}"
        for v in report.violations
        if v.severity != resources_pb2.SEVERITY_WARNING
    ]


def describe(error: SkillsvcError) -> str:
    """One line saying what failed: the message, then the field or violation it concerns."""
    parts = [f"{error.code.name}: {error.message}"]
    parts += [f"{v.field}: {v.description}" for v in error.field_violations]
    # Each violation once: the server's message often already names the first one.
    parts += [v for v in error_violations(error.report) if v.split(":", 1)[1] not in error.message]
    return "; ".join(parts).replace("\n", " ")


__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InstallFailed",
    "InvalidArgument",
    "LocalError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SkillsvcError",
    "Unavailable",
    "describe",
    "error_violations",
    "from_rpc_error",
]
