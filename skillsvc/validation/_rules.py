"""Syntax rules for skill names and versions, shared by the validator and the service."""

from __future__ import annotations

import re
from typing import Final

MAX_NAME_CHARS: Final = 64
# Semver itself has no length limit, but a version becomes a directory name in the file
# store (packages/<skill>/<version>/), so an unbounded one could not be installed.
MAX_VERSION_CHARS: Final = 128

# re.ASCII: without it \d and the classes below would also accept non-ASCII digits.
_NAME: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*", re.ASCII)

_NUMERIC: Final = r"(?:0|[1-9][0-9]*)"
_PRE_IDENT: Final = rf"(?:{_NUMERIC}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_BUILD_IDENT: Final = r"[0-9a-zA-Z-]+"
# The grammar of semver.org 2.0.0, written out rather than imported so that it stays
# strict: no leading "v", no leading zeros in numeric identifiers, no empty identifiers.
_SEMVER: Final = re.compile(
    rf"{_NUMERIC}\.{_NUMERIC}\.{_NUMERIC}"
    rf"(?:-{_PRE_IDENT}(?:\.{_PRE_IDENT})*)?"
    rf"(?:\+{_BUILD_IDENT}(?:\.{_BUILD_IDENT})*)?",
    re.ASCII,
)


def is_valid_skill_name(name: str) -> bool:
    """Whether ``name`` follows the SPEC §2 name rule.

    1-64 characters of ``a-z``, ``0-9`` and ``-``, with no leading or trailing ``-`` and
    no ``--``. The service uses the same rule for skill ids.
    """
    return len(name) <= MAX_NAME_CHARS and _NAME.fullmatch(name) is not None


def is_valid_semver(version: str) -> bool:
    """Whether ``version`` is a strict semantic version 2.0.0 (at most 128 characters)."""
    return len(version) <= MAX_VERSION_CHARS and _SEMVER.fullmatch(version) is not None
