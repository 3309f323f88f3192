"""Conversions between domain records and protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from skillsvc.api._errors import ERROR_DOMAIN, pack
from skillsvc.core.installs import report_details
from skillsvc.core.models import Change, Definition, Operation, OperationError, Package
from skillsvc.v1 import resources_pb2
from skillsvc.validation import Report


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp, or None for a missing time."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def definition_to_pb(d: Definition) -> resources_pb2.SkillDefinition:
    """The wire form of a definition."""
    return resources_pb2.SkillDefinition(
        skill_id=d.skill_id,
        tenant=d.tenant,
        display_name=d.display_name,
        description=d.description,
        active=d.active,
        public=d.public,
        current_version=d.current_version or "",
        create_time=timestamp(d.create_time),
        update_time=timestamp(d.update_time),
    )


_SEVERITY = {
    "ERROR": resources_pb2.SEVERITY_ERROR,
    "WARNING": resources_pb2.SEVERITY_WARNING,
}


def manifest_to_pb(manifest: Mapping[str, Any] | None) -> resources_pb2.Manifest | None:
    """A stored manifest (JSON object) on the wire."""
    if not manifest:
        return None
    return resources_pb2.Manifest(
        name=str(manifest.get("name", "")),
        description=str(manifest.get("description", "")),
        version=str(manifest.get("version", "")),
        license=str(manifest.get("license", "")),
        compatibility=str(manifest.get("compatibility", "")),
        allowed_tools=[str(t) for t in manifest.get("allowed_tools", [])],
        metadata={str(k): str(v) for k, v in dict(manifest.get("metadata", {})).items()},
    )


def report_dict_to_pb(report: Mapping[str, Any]) -> resources_pb2.ValidationReport:
    """A validation report in its stored JSON form on the wire."""
    return resources_pb2.ValidationReport(
        valid=bool(report["valid"]),
        violations=[
            resources_pb2.Violation(
                code=v["code"],
                path=v["path"],
                message=v["message"],
                severity=_SEVERITY[v["severity"]],
            )
            for v in report["violations"]
        ],
        manifest=manifest_to_pb(report.get("manifest")),
        sha256=report["sha256"],
        size_bytes=report["size_bytes"],
        unpacked_bytes=report["unpacked_bytes"],
        file_count=report["file_count"],
    )


def report_to_pb(report: Report) -> resources_pb2.ValidationReport:
    """A validator report on the wire."""
    return report_dict_to_pb(report_details(report)["validation_report"])


def error_to_status(error: OperationError) -> status_pb2.Status:
    """An operation's failure as ``google.rpc.Status`` (report in the details)."""
    status = status_pb2.Status(code=code_pb2.Code.Value(error.code), message=error.message)
    status.details.append(
        pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    )
    if error.details and "validation_report" in error.details:
        status.details.append(pack(report_dict_to_pb(error.details["validation_report"])))
    if error.details and "quota_violations" in error.details:
        status.details.append(
            pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=v["subject"], description=v["description"]
                        )
                        for v in error.details["quota_violations"]
                    ]
                )
            )
        )
    return status


def operation_to_pb(op: Operation) -> resources_pb2.Operation:
    """The wire form of an operation."""
    return resources_pb2.Operation(
        operation_id=op.operation_id,
        type=resources_pb2.OperationType.Value(f"OPERATION_TYPE_{op.type.value}"),
        skill_id=op.skill_id,
        version=op.version,
        state=resources_pb2.OperationState.Value(f"OPERATION_STATE_{op.state.value}"),
        stage=resources_pb2.InstallStage.Value(f"INSTALL_STAGE_{op.stage.value}"),
        from_version=op.from_version,
        to_version=op.to_version,
        reason=op.reason,
        attempt=op.attempt,
        retry_of=op.retry_of or "",
        error=error_to_status(op.error) if op.error else None,
        bytes_done=op.bytes_done,
        bytes_total=op.bytes_total,
        requested_by=op.requested_by,
        create_time=timestamp(op.create_time),
        update_time=timestamp(op.update_time),
        source_type=(
            resources_pb2.SourceType.Value(f"SOURCE_TYPE_{op.source_type.value}")
            if op.source_type
            else resources_pb2.SOURCE_TYPE_UNSPECIFIED
        ),
        source_uri=op.source_uri,
        request_id=op.request_id,
    )


def event_to_pb(item: Operation | Change) -> resources_pb2.InstallEvent:
    """A progress event from a full operation or a notified change."""
    error = None
    if isinstance(item, Operation):
        error = error_to_status(item.error) if item.error else None
        when = item.update_time
    else:
        when = item.time
    return resources_pb2.InstallEvent(
        operation_id=item.operation_id,
        stage=resources_pb2.InstallStage.Value(f"INSTALL_STAGE_{item.stage.value}"),
        state=resources_pb2.OperationState.Value(f"OPERATION_STATE_{item.state.value}"),
        bytes_done=item.bytes_done,
        bytes_total=item.bytes_total,
        message=item.message,
        time=timestamp(when),
        error=error,
        version=item.version,
    )


def package_to_pb(p: Package) -> resources_pb2.SkillPackage:
    """The wire form of a package."""
    return resources_pb2.SkillPackage(
        skill_id=p.skill_id,
        version=p.version,
        state=resources_pb2.PackageState.Value(f"PACKAGE_STATE_{p.state.value}"),
        current=p.current,
        sha256=p.sha256,
        size_bytes=p.size_bytes,
        unpacked_bytes=p.unpacked_bytes,
        file_count=p.file_count,
        source_type=resources_pb2.SourceType.Value(f"SOURCE_TYPE_{p.source_type.value}"),
        source_uri=p.source_uri,
        manifest=manifest_to_pb(p.manifest),
        path=p.path,
        create_time=timestamp(p.create_time),
        update_time=timestamp(p.update_time),
    )
