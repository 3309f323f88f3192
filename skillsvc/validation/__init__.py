"""Skill package validation: pure, synchronous, no network and no database.

``validate_archive`` reads a zip / tar / tar.gz archive member by member, writes the
members it accepts beneath a fresh destination directory (and nowhere else), and returns
a :class:`Report` of stable-coded :class:`Violation` values (SPEC §3), the parsed
:class:`Manifest` and a digest of every extracted file. It blocks on file I/O and CPU;
callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

from ._model import Code, FileEntry, Limits, Manifest, Report, Severity, Violation
from ._rules import is_valid_semver, is_valid_skill_name
from ._validate import validate_archive

__all__ = [
    "Code",
    "FileEntry",
    "Limits",
    "Manifest",
    "Report",
    "Severity",
    "Violation",
    "is_valid_semver",
    "is_valid_skill_name",
    "validate_archive",
]
