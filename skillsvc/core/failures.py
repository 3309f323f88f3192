"""What an install failure is recorded as: the one mapping from an exception to a stored error."""

from __future__ import annotations

import asyncio
import logging

from skillsvc.core.models import (
    OperationError,
)
from skillsvc.core.reports import report_details
from skillsvc.errors import (
    ResourceExhausted,
    SkillsvcError,
)
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


def error_of(exc: BaseException) -> OperationError:
    """What to record for an install that ended with ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return OperationError(
            "ABORTED", "INTERRUPTED", "interrupted: the upload or the server stopped"
        )
    if isinstance(exc, ValidationFailed):
        return OperationError(exc.status, exc.reason, exc.message, report_details(exc.report))
    if isinstance(exc, ResourceExhausted) and exc.violations:
        quota = [{"subject": v.subject, "description": v.description} for v in exc.violations]
        return OperationError(exc.status, exc.reason, exc.message, {"quota_violations": quota})
    if isinstance(exc, SkillsvcError):
        return OperationError(exc.status, exc.reason, exc.message)
    logger.error("install failed unexpectedly", exc_info=exc)
    return OperationError("INTERNAL", "INTERNAL", "internal error; the server logged the details")
