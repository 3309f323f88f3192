"""Versions for installs whose request and manifest give none (SPEC §4 Install rules).

Public skills almost never declare a version (the Agent Skills format has no top-level
``version``), so the service assigns one, under the skill's lock and in the
transaction that claims it:

* an upload identical to a READY package of the skill (same archive SHA-256) gets that
  package's version, and the install changes nothing (it may still activate it);
* otherwise the next patch after the highest version the skill has or had (any package
  state, an install in flight included, and the versions of deleted packages), or
  ``1.0.0`` for a skill's first package.

Because the claim row is written before the lock is released, concurrent versionless
installs of one skill get distinct, ascending versions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from skillsvc.core.models import Operation, PackageState, SourceType
from skillsvc.core.quotas import check_version_count
from skillsvc.db import Database, OperationChanges
from skillsvc.validation import is_valid_semver

FIRST_VERSION: Final = "1.0.0"

_PrereleaseKey = tuple[tuple[int, int, str], ...]
SemverKey = tuple[int, int, int, int, _PrereleaseKey]


def semver_key(version: str) -> SemverKey:
    """A sort key giving semver 2.0 precedence (build metadata ignored).

    A release sorts after its pre-releases; pre-release identifiers compare numerically
    when numeric, numeric ones before alphanumeric ones, and a shorter list of equal
    leading identifiers first (semver.org §11).
    """
    core = version.split("+", 1)[0]
    release, _, prerelease = core.partition("-")
    major, minor, patch = (int(part) for part in release.split("."))
    if not prerelease:
        return (major, minor, patch, 1, ())
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in prerelease.split(".")
    )
    return (major, minor, patch, 0, identifiers)


def next_version(existing: Iterable[str]) -> str:
    """The next patch after the highest of ``existing`` (``1.0.0`` when there is none).

    The next patch of a pre-release is its release (``2.0.0-rc.1`` → ``2.0.0``), which
    is higher than it and than every other pre-release of that version.
    """
    versions = [v for v in existing if is_valid_semver(v)]
    if not versions:
        return FIRST_VERSION
    highest = max(versions, key=semver_key)
    major, minor, patch, released, _ = semver_key(highest)
    return f"{major}.{minor}.{patch + 1 if released else patch}"


@dataclass(frozen=True)
class Assignment:
    """The version an install got from the service."""

    version: str
    """The assigned version."""
    identical: bool
    """True when a READY package with the same bytes holds it: nothing to install."""


async def assign_version(
    db: Database,
    op: Operation,
    sha256: str,
    *,
    max_versions_per_skill: int,
    claimed: OperationChanges,
) -> Assignment:
    """Assign ``op`` a version, claim it and record it on the operation, atomically.

    A new version is recorded with ``claimed`` (the stage the install enters with its
    claim) in the claim's transaction; an identical one only names the version. The
    version quota is checked for a new version as for any other claim.
    """
    async with db.transaction() as tx:
        choice = await tx.version_choice(op.skill_id, sha256)  # takes the skill's lock
        if choice.identical is not None:
            same = choice.identical
            await tx.update_operation(
                op.operation_id,
                OperationChanges(version=same, message=f"identical to the installed {same}"),
            )
            return Assignment(same, identical=True)
        version = next_version(choice.versions)
        check_version_count(op.skill_id, choice.live_versions, max_versions_per_skill)
        await tx.claim_package(
            skill_id=op.skill_id,
            version=version,
            state=PackageState.INSTALLING,
            source_type=op.source_type or SourceType.UPLOAD,
            source_uri=op.source_uri,
            operation_id=op.operation_id,
        )
        await tx.update_operation(op.operation_id, dataclasses.replace(claimed, version=version))
    return Assignment(version, identical=False)
