"""Identifier rules shared by the API, the domain and the package validator."""

from __future__ import annotations

import re
from typing import Final

# SPEC §2: 1-64 chars of a-z, 0-9 and '-', no leading/trailing '-', no '--'.
_SKILL_NAME: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")

# semver.org 2.0.0, the official regular expression with ASCII digits only (Python's \d
# also matches other scripts' digits).
_SEMVER: Final = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)

SKILL_NAME_RULE: Final = (
    "1-64 characters of a-z, 0-9 and '-', not starting or ending with '-' and without '--'"
)
MAX_VERSION_LENGTH: Final = 128


def is_valid_skill_name(name: str) -> bool:
    """True when ``name`` follows the skill name rule (also the rule for skill ids)."""
    return _SKILL_NAME.fullmatch(name) is not None and "--" not in name


def is_valid_semver(version: str) -> bool:
    """True when ``version`` is a semantic version 2.0.0 (no leading ``v``)."""
    return len(version) <= MAX_VERSION_LENGTH and _SEMVER.fullmatch(version) is not None
