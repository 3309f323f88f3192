"""SQL of the quotas (SKILLSVC_MAX_SKILLS_PER_TENANT, SKILLSVC_MAX_VERSIONS_PER_SKILL).

A quota is checked and the row it limits is inserted in one transaction, under an
advisory lock that every such insert takes, so concurrent creates cannot overshoot.
Versions are serialised by the per-skill lock (``LOCK_SKILL``) the installer takes
anyway; definitions by a per-tenant lock.
"""

from __future__ import annotations

from typing import Final

# Serialises creating definitions in one tenant ('' is the platform).
LOCK_TENANT: Final = "SELECT pg_advisory_xact_lock(hashtextextended('skillsvc:tenant:' || $1, 0))"

COUNT_TENANT_DEFINITIONS: Final = "SELECT count(*) FROM skill_definitions WHERE tenant = $1"
