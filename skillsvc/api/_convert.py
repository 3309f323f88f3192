"""Conversions between domain records and protobuf messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from skillsvc.core.models import Definition
from skillsvc.v1 import resources_pb2


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
