"""Changing what is installed: rollback, and deleting packages and definitions.

Rollback and deletion take the same per-skill advisory lock as installs, so they are
serialised with them. Both change the database and the store together in an order a
crash cannot leave inconsistent:

- Rollback commits ``current_version`` and swaps the ``current`` link inside the lock;
  a crash between the two leaves a link that start-up reconciles with the database.
- Deletion moves the files out of ``packages/`` into this process's stash *before* the
  transaction deleting the rows commits, and purges them after. If the process dies in
  between, recovery finds the stash: rows still there means the transaction never
  committed and the files go back; rows gone means they are purged. So there is never
  a READY row without its files, nor files without a row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from pathlib import Path

from skillsvc.blobs import UNAVAILABLE_REASON, BlobStore, LocalBlobs
from skillsvc.core.definitions import Definitions, check_skill_id
from skillsvc.core.materialise import Materialiser
from skillsvc.core.models import (
    Caller,
    Operation,
    OperationState,
    OperationType,
    Package,
    PackageState,
    Stage,
)
from skillsvc.core.naming import is_valid_semver
from skillsvc.db import Database, NewOperation, Repository
from skillsvc.errors import FailedPrecondition, InvalidArgument, NotFound, SkillsvcError
from skillsvc.metrics import STORAGE_BYTES
from skillsvc.store import Store

logger = logging.getLogger(__name__)

MAX_REASON = 1024
MAX_REPORTED_PROBLEMS = 5


def _check_version(version: str, field: str) -> None:
    if not is_valid_semver(version):
        raise InvalidArgument.field(field, f"must be a semantic version; got {version!r}")


async def last_known_good(repo: Repository, skill_id: str, current: str | None) -> str | None:
    """The version Rollback picks when no target is given.

    Walking the activation history back from now: the most recent version that was
    current, is not the current one, is still READY, and was never rolled back away
    from (so two rollbacks in a row go 1.2 → 1.1 → 1.0, not back to 1.2).
    """
    history = await repo.list_activations(skill_id)
    abandoned = {
        previous
        for _version, previous, kind in history
        if kind is OperationType.ROLLBACK and previous is not None
    }
    for version, _previous, _kind in history:
        if version == current or version in abandoned:
            continue
        package = await repo.get_package(skill_id, version, None)
        if package is not None and package.state is PackageState.READY:
            return version
    return None


class Lifecycle:
    """Rollback and deletion."""

    def __init__(
        self,
        db: Database,
        store: Store,
        definitions: Definitions,
        instance_id: str,
        *,
        blobs: BlobStore | None = None,
        materialiser: Materialiser | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._blobs: BlobStore = blobs if blobs is not None else LocalBlobs(store.root)
        self._definitions = definitions
        self._instance_id = instance_id
        self._materialiser = materialiser

    async def rollback(
        self, caller: Caller, skill_id: str, target_version: str, reason: str
    ) -> Operation:
        """Make an earlier READY version current again, after an integrity check."""
        check_skill_id(skill_id)
        if target_version:
            _check_version(target_version, "target_version")
        if len(reason) > MAX_REASON:
            raise InvalidArgument.field("reason", f"must be at most {MAX_REASON} characters")
        definition = await self._definitions.get(caller, skill_id, fresh=True)
        self._definitions.check_can_manage(caller, definition.tenant)
        operation_id = str(uuid.uuid4())
        if self._materialiser is not None:
            # A target installed on another node may not be here yet: fetch and verify
            # it first, outside the skill's lock (it can take a while). The lock below
            # re-reads everything; a target deleted meanwhile is reported there.
            wanted = target_version or await last_known_good(
                self._db.repo, skill_id, definition.current_version
            )
            if wanted is not None:
                await self._materialiser.ensure_local(skill_id, wanted)
        async with self._db.transaction() as tx:
            await tx.lock_skill(skill_id)
            fresh = await tx.get_definition(skill_id, None)
            if fresh is None:
                raise NotFound(f"skill definition {skill_id!r} not found")
            current = fresh.current_version
            target = target_version or await last_known_good(tx, skill_id, current)
            if target is None:
                raise FailedPrecondition(
                    f"{skill_id} has no earlier READY version to roll back to",
                    reason="NO_ROLLBACK_TARGET",
                )
            package = await tx.get_package(skill_id, target, None)
            if package is None:
                raise NotFound(f"package {skill_id} {target} not found")
            if package.state is not PackageState.READY:
                raise FailedPrecondition(
                    f"{skill_id} {target} is {package.state.value}, not READY",
                    reason="TARGET_NOT_READY",
                )
            new = NewOperation(
                operation_id=operation_id,
                type=OperationType.ROLLBACK,
                skill_id=skill_id,
                version=target,
                state=OperationState.SUCCEEDED,
                stage=Stage.DONE,
                requested_by=caller.subject,
                owner=self._instance_id,
                from_version=current or "",
                to_version=target,
                reason=reason,
            )
            if target == current:
                # Nothing to change; the log still says who asked and why.
                op, _ = await tx.insert_operation(
                    dataclasses.replace(new, message=f"{target} is already current")
                )
                return op
            files = await tx.package_files(skill_id, target)
            problems = await asyncio.to_thread(
                self._store.verify_tree,
                skill_id,
                target,
                [(f["path"], f["size"], f["sha256"]) for f in files],
            )
            if problems:
                shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
                more = len(problems) - MAX_REPORTED_PROBLEMS
                raise FailedPrecondition(
                    f"{skill_id} {target} failed its integrity check: {shown}"
                    + (f" (and {more} more)" if more > 0 else ""),
                    reason="INTEGRITY_CHECK_FAILED",
                )
            op, _ = await tx.insert_operation(
                dataclasses.replace(new, message=f"rolled back from {current} to {target}")
            )
            await tx.set_current_version(skill_id, target, operation_id, OperationType.ROLLBACK)
            await asyncio.to_thread(self._store.activate, skill_id, target)
        logger.info("rolled %s back from %s to %s (%s)", skill_id, current, target, reason)
        return op

    async def delete_package(self, caller: Caller, skill_id: str, version: str) -> None:
        """Delete a version that is not current: its row, its files, its archive."""
        check_skill_id(skill_id)
        _check_version(version, "version")
        definition = await self._definitions.get(caller, skill_id, fresh=True)
        self._definitions.check_can_manage(caller, definition.tenant)
        stashed: Path | None = None
        try:
            async with self._db.transaction() as tx:
                await tx.lock_skill(skill_id)
                package = await tx.get_package_for_update(skill_id, version)
                if package is None:
                    raise NotFound(f"package {skill_id} {version} not found")
                if package.current:
                    raise FailedPrecondition(
                        f"{skill_id} {version} is the current version; roll back or install "
                        "another version first",
                        reason="VERSION_IS_CURRENT",
                    )
                if package.state in (PackageState.PENDING, PackageState.INSTALLING):
                    raise FailedPrecondition(
                        f"{skill_id} {version} is being installed", reason="VERSION_BUSY"
                    )
                await tx.delete_package(skill_id, version)
                stashed = await asyncio.to_thread(
                    self._store.stash, self._instance_id, skill_id, version
                )
        except BaseException:
            if stashed is not None:
                await asyncio.to_thread(self._store.unstash, stashed, skill_id, version)
            raise
        if stashed is not None:
            await asyncio.to_thread(self._store.purge, stashed)
        STORAGE_BYTES.dec(package.unpacked_bytes)
        if package.sha256:
            await self._drop_blob_if_unused(package.sha256, package.size_bytes)

    async def delete_definition(self, caller: Caller, skill_id: str, *, force: bool) -> None:
        """Delete a definition; with ``force`` also every package and their files."""
        check_skill_id(skill_id)
        definition = await self._definitions.get(caller, skill_id, fresh=True)
        self._definitions.check_can_manage(caller, definition.tenant)
        stashed: Path | None = None
        packages: list[Package] = []
        try:
            async with self._db.transaction() as tx:
                await tx.lock_skill(skill_id)
                packages = await tx.list_packages(skill_id, None, 1_000_000)
                if packages and not force:
                    raise FailedPrecondition(
                        f"skill definition {skill_id!r} has {len(packages)} package(s); "
                        "delete them first or pass force",
                        reason="HAS_PACKAGES",
                    )
                busy = [
                    p.version
                    for p in packages
                    if p.state in (PackageState.PENDING, PackageState.INSTALLING)
                ]
                if busy:
                    raise FailedPrecondition(
                        f"{skill_id} {', '.join(busy)} being installed; retry when done",
                        reason="VERSION_BUSY",
                    )
                await tx.delete_skill_packages(skill_id)
                await tx.delete_definition(skill_id)
                stashed = await asyncio.to_thread(self._store.stash, self._instance_id, skill_id)
        except BaseException:
            if stashed is not None:
                await asyncio.to_thread(self._store.unstash, stashed, skill_id, None)
            raise
        if stashed is not None:
            await asyncio.to_thread(self._store.purge, stashed)
        STORAGE_BYTES.dec(sum(p.unpacked_bytes for p in packages))
        for package in packages:
            if package.sha256:
                await self._drop_blob_if_unused(package.sha256, package.size_bytes)

    async def _drop_blob_if_unused(self, sha256: str, size: int) -> None:
        """Remove an archive nothing needs any more.

        Another package may share it (the same bytes under another skill). The digest
        lock orders this against an install committing the same bytes, which takes it
        too. The deletion has committed by now: should the blob store not answer, the
        archive is left for gc (which reaps archives no package owns) and the caller
        still succeeds.
        """
        try:
            async with self._db.transaction() as tx:
                await tx.lock_blob(sha256)
                if not await tx.blob_in_use(sha256):
                    await self._blobs.delete("archive", sha256)
                    if not self._blobs.shared:
                        STORAGE_BYTES.dec(size)
        except SkillsvcError as exc:
            if exc.reason != UNAVAILABLE_REASON:
                raise
            logger.warning("left the archive %s to gc: %s", sha256, exc.message)
