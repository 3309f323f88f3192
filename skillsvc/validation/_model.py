"""The validator's public value types: limits in, violations and a report out.

Everything here is immutable so a report can be handed between threads (the service runs
validation in a worker thread and reads the result on the event loop) without copying.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

KiB = 1024
MiB = 1024 * KiB


class Code(enum.StrEnum):
    """Stable violation codes (SPEC §3); the value of each member equals its name."""

    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    CORRUPT_ARCHIVE = "CORRUPT_ARCHIVE"
    TOO_LARGE = "TOO_LARGE"
    UNPACKED_TOO_LARGE = "UNPACKED_TOO_LARGE"
    TOO_MANY_FILES = "TOO_MANY_FILES"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    COMPRESSION_RATIO = "COMPRESSION_RATIO"
    PATH_TRAVERSAL = "PATH_TRAVERSAL"
    ABSOLUTE_PATH = "ABSOLUTE_PATH"
    LINK_ENTRY = "LINK_ENTRY"
    SPECIAL_FILE = "SPECIAL_FILE"
    DUPLICATE_ENTRY = "DUPLICATE_ENTRY"
    BAD_PATH = "BAD_PATH"
    MISSING_SKILL_MD = "MISSING_SKILL_MD"
    BAD_FRONTMATTER = "BAD_FRONTMATTER"
    NAME_INVALID = "NAME_INVALID"
    NAME_MISMATCH = "NAME_MISMATCH"
    DESCRIPTION_INVALID = "DESCRIPTION_INVALID"
    VERSION_INVALID = "VERSION_INVALID"
    VERSION_MISMATCH = "VERSION_MISMATCH"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"


class Severity(enum.StrEnum):
    """How much a violation matters: only errors make a report invalid."""

    ERROR = "ERROR"
    WARNING = "WARNING"


@dataclass(frozen=True)
class Limits:
    """Resource limits applied while reading an archive (defaults from SPEC §3)."""

    max_package_bytes: int = 100 * MiB
    """Largest accepted archive file, in bytes."""
    max_unpacked_bytes: int = 512 * MiB
    """Largest total of regular-file bytes written to the destination."""
    max_files: int = 10_000
    """Most entries: files, directories and refused entries alike (``__MACOSX/`` aside)."""
    max_file_bytes: int = 100 * MiB
    """Largest single extracted file, in bytes."""
    max_path_bytes: int = 255
    """Longest normalised entry path, in UTF-8 bytes."""
    max_depth: int = 32
    """Most path components in one entry name."""
    max_ratio: int = 200
    """Largest accepted unpacked/compressed ratio (see ``ratio_min_bytes``)."""
    ratio_min_bytes: int = 1 * MiB
    """The ratio is only judged once this many bytes have been unpacked (by one entry,
    or by the archive as a whole), so tiny, very compressible files (an empty
    ``__init__.py``) are never flagged."""
    max_manifest_bytes: int = 256 * KiB
    """Cap on SKILL.md front matter / manifest.json read before YAML or JSON parsing."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{field.name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class Violation:
    """One problem found in a package."""

    code: Code
    """Stable machine-readable code."""
    path: str
    """Entry name inside the archive (or file in the skill root) it concerns; may be empty.
    Control characters and undecodable bytes are escaped, so it is always printable UTF-8."""
    message: str
    """Human-readable explanation."""
    severity: Severity = Severity.ERROR
    """ERROR makes the report invalid; WARNING does not."""


@dataclass(frozen=True)
class Manifest:
    """The skill's declared metadata, from SKILL.md front matter or manifest.json."""

    name: str
    """Skill name; empty when missing or not a string."""
    description: str
    """Skill description; empty when missing or not a string."""
    version: str
    """The version the package resolves to: the caller's expected version, else a
    semver top-level ``version``, else a semver ``metadata.version``, else empty (the
    service assigns one)."""
    license: str
    """License string, empty when absent."""
    compatibility: str
    """Compatibility note, empty when absent."""
    allowed_tools: tuple[str, ...]
    """Tools the skill may use, from a space-separated string or a list."""
    metadata: Mapping[str, str]
    """Free-form string map (a read-only ``MappingProxyType``)."""

    # A report crosses a process boundary (the archive pool), and a mappingproxy
    # cannot be pickled: it travels as a dict and is wrapped again on arrival.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "metadata": dict(self.metadata)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, metadata=types.MappingProxyType(state["metadata"]))


@dataclass(frozen=True)
class FileEntry:
    """One regular file written to the destination."""

    path: str
    """POSIX path relative to the skill root (after a single top-level folder is stripped)."""
    size: int
    """Bytes written."""
    sha256: str
    """Hex SHA-256 of the bytes written, for later integrity checks."""
    executable: bool
    """Whether the file was given mode 0o755 (any exec bit set in the archive)."""


@dataclass(frozen=True)
class Report:
    """The outcome of validating one archive."""

    violations: tuple[Violation, ...]
    """Every problem found, in discovery order."""
    manifest: Manifest | None
    """The parsed manifest, or None when none could be read."""
    sha256: str
    """Hex SHA-256 of the archive file (the caller's digest when it passed one)."""
    size_bytes: int
    """Size of the archive file."""
    unpacked_bytes: int
    """Total bytes of regular files written."""
    file_count: int
    """Number of regular files written."""
    files: tuple[FileEntry, ...]
    """Every regular file written, sorted by path."""

    @property
    def valid(self) -> bool:
        """True when no violation is an error (warnings are allowed)."""
        return not any(v.severity is Severity.ERROR for v in self.violations)
