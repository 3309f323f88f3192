"""Validation reports and manifests on the wire (from the validator or their stored JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skillsvc.core.reports import report_details
from skillsvc.v1 import resources_pb2
from skillsvc.validation import Report

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
