"""Conversions between domain records and protobuf messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from skillsvc.api._errors import render_status
from skillsvc.api._reports import manifest_to_pb, report_to_pb
from skillsvc.core.models import Change, Definition, Operation, Package, SkillEvent
from skillsvc.core.watch import Synced
from skillsvc.v1 import resources_pb2

__all__ = [
    "definition_to_pb",
    "event_to_pb",
    "manifest_to_pb",
    "operation_to_pb",
    "package_to_pb",
    "report_to_pb",
    "skill_event_to_pb",
    "timestamp",
]


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
        error=render_status(op.error) if op.error else None,
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
        error = render_status(item.error) if item.error else None
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


def skill_event_to_pb(item: SkillEvent | Synced) -> resources_pb2.SkillEvent:
    """The wire form of a change-log event, or of the stream's SYNCED marker."""
    if isinstance(item, Synced):
        return resources_pb2.SkillEvent(seq=item.seq, type=resources_pb2.SKILL_EVENT_TYPE_SYNCED)
    return resources_pb2.SkillEvent(
        seq=item.seq,
        skill_id=item.skill_id,
        type=resources_pb2.SkillEventType.Value(f"SKILL_EVENT_TYPE_{item.type.value}"),
        version=item.version,
        from_version=item.from_version,
        to_version=item.to_version,
        time=timestamp(item.time),
        tenant=item.tenant,
    )
