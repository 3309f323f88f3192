"""Identifier rules shared by the API, the domain and the store.

The rules themselves live with the package validator (``skillsvc.validation``), which
must judge manifest names and versions exactly as the service judges ids; this module
adds what the service needs to talk about them.
"""

from __future__ import annotations

from typing import Final

from skillsvc.validation._rules import MAX_VERSION_CHARS, is_valid_semver, is_valid_skill_name

__all__ = ["MAX_VERSION_LENGTH", "SKILL_NAME_RULE", "is_valid_semver", "is_valid_skill_name"]

SKILL_NAME_RULE: Final = (
    "1-64 characters of a-z, 0-9 and '-', not starting or ending with '-' and without '--'"
)
MAX_VERSION_LENGTH: Final = MAX_VERSION_CHARS
