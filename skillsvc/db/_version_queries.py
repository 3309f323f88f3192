"""SQL of version assignment (installs whose request and manifest give no version).

Both run under the skill's lock (``LOCK_SKILL``), in the transaction that then claims
the assigned version, so two installs of one skill never get the same version.
"""

from __future__ import annotations

from typing import Final

# An identical re-upload: a READY package of the skill with the same archive digest
# (the current one first, then the newest).
FIND_IDENTICAL_READY_VERSION: Final = """
SELECT p.version
FROM skill_packages p JOIN skill_definitions d ON d.skill_id = p.skill_id
WHERE p.skill_id = $1 AND p.sha256 = $2 AND p.state = 'READY'
ORDER BY (d.current_version IS NOT DISTINCT FROM p.version) DESC, p.create_time DESC
LIMIT 1
"""

# Every version the skill has or had: its packages in any state (an INSTALLING claim
# included), and those of succeeded installs whose package was deleted since, so an
# assigned version is never handed out twice for different content.
LIST_SKILL_VERSIONS: Final = """
SELECT version FROM skill_packages WHERE skill_id = $1
UNION
SELECT version FROM skill_install_logs
WHERE skill_id = $1 AND type = 'INSTALL' AND state = 'SUCCEEDED' AND version <> ''
"""
