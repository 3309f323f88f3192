"""What an install (or a Validate) asks for, and the checks every spec passes first."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

from skillsvc.core.models import (
    SourceType,
)
from skillsvc.core.naming import (
    MAX_VERSION_LENGTH,
    SKILL_NAME_RULE,
    is_valid_semver,
    is_valid_skill_name,
)
from skillsvc.errors import (
    FieldViolation,
    InvalidArgument,
)
from skillsvc.intake import UrlPolicy
from skillsvc.validation import Limits

logger = logging.getLogger(__name__)

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
MAX_REQUEST_ID: Final = 128


@dataclass(frozen=True)
class InstallRequest:
    """A validated-to-be install spec, in domain terms."""

    skill_id: str
    """The skill to install into."""
    version: str
    """Requested version; empty = from the manifest."""
    source_type: SourceType | None
    """Upload or URL; None when the request named neither."""
    url: str
    """URL sources: the URL."""
    declared_size: int
    """Uploads: the exact size announced."""
    sha256: str
    """Expected digest; empty = not checked."""
    activate: bool
    """Make current when done."""
    request_id: str
    """Idempotency key; empty = none."""


@dataclass(frozen=True)
class InstallerSettings:
    """The knobs of the pipeline."""

    limits: Limits
    """Validator limits (archive size, unpacked size, files …)."""
    url_policy: UrlPolicy
    """How URL sources are fetched."""
    max_concurrent: int = 50
    """Installs running at once."""
    max_queued: int = 1000
    """Installs waiting for a slot before new ones are refused. Uploads still being
    received count as waiting: at most ``max_concurrent + max_queued`` installs are
    admitted at once, from acceptance (before a byte is read) to their end."""
    heartbeat_seconds: float = 5.0
    """How often this process proves it is alive; others reap it after 3 missed beats."""
    max_versions_per_skill: int = 50
    """Version quota: versions (FAILED aside) one skill may hold."""


def check_request(
    req: InstallRequest, *, skill_id_required: bool = True, what: str = "install spec"
) -> None:
    """Reject malformed specs with every bad field named (``what`` names the request)."""
    violations: list[FieldViolation] = []
    if not req.skill_id:
        if skill_id_required:
            violations.append(FieldViolation("spec.skill_id", "is required"))
    elif not is_valid_skill_name(req.skill_id):
        violations.append(FieldViolation("spec.skill_id", f"must be {SKILL_NAME_RULE}"))
    if req.version and (len(req.version) > MAX_VERSION_LENGTH or not is_valid_semver(req.version)):
        violations.append(
            FieldViolation(
                "spec.version", f"must be a semantic version (2.0.0); got {req.version!r}"
            )
        )
    if req.source_type is None:
        violations.append(FieldViolation("spec.source", "set either upload or url"))
    elif req.source_type is SourceType.UPLOAD and req.declared_size <= 0:
        violations.append(
            FieldViolation("spec.upload.size_bytes", "must be the archive's size in bytes (> 0)")
        )
    elif req.source_type is SourceType.URL and not req.url:
        violations.append(FieldViolation("spec.url", "is required for a URL source"))
    if req.sha256 and not _SHA256_HEX.fullmatch(req.sha256):
        violations.append(FieldViolation("spec.sha256", "must be 64 lower-case hex digits"))
    if len(req.request_id) > MAX_REQUEST_ID:
        violations.append(
            FieldViolation("spec.request_id", f"must be at most {MAX_REQUEST_ID} characters")
        )
    if violations:
        raise InvalidArgument(f"invalid {what}", violations)
