"""A validation report as JSON: stored with a failed operation, and a package's manifest."""

from __future__ import annotations

import logging
from typing import Any

from skillsvc.validation import Report

logger = logging.getLogger(__name__)


def report_details(report: Report) -> dict[str, Any]:
    """A validation report as the JSON stored with a failed operation."""
    manifest = None
    if report.manifest is not None:
        m = report.manifest
        manifest = {
            "name": m.name,
            "description": m.description,
            "version": m.version,
            "license": m.license,
            "compatibility": m.compatibility,
            "allowed_tools": list(m.allowed_tools),
            "metadata": dict(m.metadata),
        }
    return {
        "validation_report": {
            "valid": report.valid,
            "violations": [
                {
                    "code": v.code.value,
                    "path": v.path,
                    "message": v.message,
                    "severity": v.severity.value,
                }
                for v in report.violations
            ],
            "manifest": manifest,
            "sha256": report.sha256,
            "size_bytes": report.size_bytes,
            "unpacked_bytes": report.unpacked_bytes,
            "file_count": report.file_count,
        }
    }
