"""Quotas: how many definitions a tenant and how many versions a skill may have.

Both checks run inside the caller's transaction, after it took the lock that
serialises the inserts being limited (``Repository.lock_tenant`` for definitions,
``Repository.lock_skill`` for versions), so the count cannot change before the
insert commits: concurrent creates never overshoot a quota.
"""

from __future__ import annotations

from skillsvc.db import Repository
from skillsvc.errors import QuotaViolation, ResourceExhausted

QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
"""The ErrorInfo reason of every quota failure."""


async def check_definition_quota(repo: Repository, tenant: str, limit: int) -> None:
    """RESOURCE_EXHAUSTED if ``tenant`` already owns ``limit`` definitions."""
    count = await repo.count_tenant_definitions(tenant)
    if count < limit:
        return
    owner = f"tenant {tenant!r}" if tenant else "the platform"
    subject = f"tenant:{tenant}" if tenant else "platform"
    description = (
        f"{owner} has {count} skill definitions; SKILLSVC_MAX_SKILLS_PER_TENANT allows {limit}"
    )
    raise ResourceExhausted(
        f"skill definition quota reached: {description}",
        [QuotaViolation(subject, description)],
        reason=QUOTA_EXCEEDED,
        metadata={"quota": "SKILLSVC_MAX_SKILLS_PER_TENANT", "limit": str(limit)},
    )


def check_version_count(skill_id: str, count: int, limit: int) -> None:
    """RESOURCE_EXHAUSTED if ``count`` live versions of the skill already reach ``limit``."""
    if count < limit:
        return
    description = (
        f"{skill_id} has {count} versions; SKILLSVC_MAX_VERSIONS_PER_SKILL allows {limit}; "
        "delete old versions with DeletePackage"
    )
    raise ResourceExhausted(
        f"version quota reached: {description}",
        [QuotaViolation(f"skill:{skill_id}", description)],
        reason=QUOTA_EXCEEDED,
        metadata={"quota": "SKILLSVC_MAX_VERSIONS_PER_SKILL", "limit": str(limit)},
    )
