"""What a failure is recorded as: the one mapping from an exception to a stored error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from skillsvc.core.models import (
    OperationError,
)
from skillsvc.core.reports import report_details
from skillsvc.errors import InvalidArgument, ResourceExhausted, SkillsvcError
from skillsvc.validation import Report

# One logger for every part of the installer, as when it was one module.
logger = logging.getLogger("skillsvc.core.installs")


class ValidationFailed(SkillsvcError):
    """The package broke the rules; carries the report for the operation's details."""

    status = "INVALID_ARGUMENT"
    default_reason = "VALIDATION_FAILED"

    def __init__(self, report: Report) -> None:
        first = next(v for v in report.violations if v.severity.value == "ERROR")
        count = sum(1 for v in report.violations if v.severity.value == "ERROR")
        where = f" ({first.path})" if first.path else ""
        super().__init__(
            f"package validation failed with {count} error(s); first: "
            f"{first.code.value}{where}: {first.message}"
        )
        self.report = report


def error_record(error: SkillsvcError) -> OperationError:
    """The one mapping from a domain error to its recorded form.

    An RPC error and a stored operation failure are both rendered from this record
    (``skillsvc.api._errors.render_status``), so they carry the same
    ``google.rpc.Status``: code, message, ErrorInfo reason and metadata, and the
    details (BadRequest field violations, QuotaFailure, the ValidationReport). The
    details are JSON, as stored with an operation.
    """
    details: dict[str, Any] = {}
    if error.metadata:
        details["metadata"] = dict(error.metadata)
    if isinstance(error, InvalidArgument) and error.violations:
        details["field_violations"] = [
            {"field": v.field, "description": v.description} for v in error.violations
        ]
    if isinstance(error, ResourceExhausted) and error.violations:
        details["quota_violations"] = [
            {"subject": v.subject, "description": v.description} for v in error.violations
        ]
    if isinstance(error, ValidationFailed):
        details |= report_details(error.report)
    return OperationError(error.status, error.reason, error.message, details or None)


def error_of(exc: BaseException) -> OperationError:
    """What to record for an install that ended with ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return OperationError(
            "ABORTED", "INTERRUPTED", "interrupted: the upload or the server stopped"
        )
    if isinstance(exc, SkillsvcError):
        return error_record(exc)
    logger.error("install failed unexpectedly", exc_info=exc)
    return OperationError("INTERNAL", "INTERNAL", "internal error; the server logged the details")
