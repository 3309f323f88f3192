"""SQL of version assignment (installs whose request and manifest give no version).

It runs in the transaction that then claims the assigned version: the function takes
the skill's lock (``LOCK_SKILL``'s key) and holds it until that transaction ends, so
two installs of one skill never get the same version.
"""

from __future__ import annotations

from typing import Final

# The skill's lock, then an identical READY version (if any), every version the skill
# has or had, and the count against its quota, in one statement
# (migrations/0010_version_choice.sql).
VERSION_CHOICE: Final = (
    "SELECT identical, versions, live_versions FROM skillsvc_version_choice($1, $2)"
)
