"""One mapping of failures to google.rpc.Status: RPC errors and stored failures agree."""

from __future__ import annotations

import json

from google.rpc import error_details_pb2

from skillsvc.api._errors import render_status, to_status
from skillsvc.core.failures import ValidationFailed, error_of
from skillsvc.core.models import OperationError
from skillsvc.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
)
from skillsvc.v1 import resources_pb2
from skillsvc.validation import Code, Report, Severity, Violation


def _stored(exc: BaseException) -> OperationError:
    """The failure as an operation row gives it back (details through JSON)."""
    error = error_of(exc)
    details = None if error.details is None else json.loads(json.dumps(error.details))
    return OperationError(error.code, error.reason, error.message, details)


def test_a_stored_failure_renders_as_the_rpc_error_would() -> None:
    for exc in (
        InvalidArgument(
            "invalid install spec",
            [FieldViolation("spec.version", "must be a semantic version")],
            metadata={"field": "spec.version"},
        ),
        ResourceExhausted(
            "version quota reached",
            [QuotaViolation("skill:x", "x has 3 versions")],
            reason="QUOTA_EXCEEDED",
            metadata={"limit": "3"},
        ),
        Aborted("busy", reason="CONCURRENT_INSTALL", metadata={"operation_id": "abc"}),
    ):
        assert render_status(_stored(exc)) == to_status(exc), exc
    bad = to_status(
        InvalidArgument("bad", [FieldViolation("spec.url", "is required")], metadata={"a": "b"})
    )
    info, request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert bad.details[0].Unpack(info) and dict(info.metadata) == {"a": "b"}
    assert bad.details[1].Unpack(request) and request.field_violations[0].field == "spec.url"


def test_a_validation_failure_carries_its_report() -> None:
    report = Report(
        violations=(Violation(Code.CHECKSUM_MISMATCH, "", "digest differs", Severity.ERROR),),
        manifest=None,
        sha256="0" * 64,
        size_bytes=10,
        unpacked_bytes=0,
        file_count=0,
        files=(),
    )
    status = render_status(_stored(ValidationFailed(report)))
    assert status == to_status(ValidationFailed(report))
    carried = resources_pb2.ValidationReport()
    assert status.details[-1].Unpack(carried)
    assert not carried.valid and carried.violations[0].code == "CHECKSUM_MISMATCH"
