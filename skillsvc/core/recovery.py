"""Liveness and recovery: fail the operations of dead processes, clean up after them."""

from __future__ import annotations

import asyncio
import logging
import os

from skillsvc.blobs import UNAVAILABLE_REASON
from skillsvc.core.install_base import InstallerBase, is_file
from skillsvc.core.models import (
    Operation,
    PackageState,
    SourceType,
)
from skillsvc.errors import STORE_FULL_REASON, STORE_UNAVAILABLE_REASON, SkillsvcError
from skillsvc.metrics import STORAGE_BYTES

# One logger for every part of the installer, as when it was one module.
logger = logging.getLogger("skillsvc.core.installs")


class Recovery(InstallerBase):
    """Recovers after dead processes and releases versions that never became READY."""

    def _is_dead(self, hostname: str, pid: int, stale: bool) -> bool:
        if stale:
            return True
        if hostname != self._hostname or pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    async def recover(self) -> list[Operation]:
        """Fail the operations of dead processes and clean up after them."""
        repo = self._db.repo
        stale_after = 3 * self._settings.heartbeat_seconds
        instances = await repo.list_instances(stale_after)
        known = {i.instance_id for i in instances}
        dead = {
            i.instance_id
            for i in instances
            if i.instance_id != self.instance_id and self._is_dead(i.hostname, i.pid, i.stale)
        }
        # Owners with unfinished operations but no instance row at all are gone too.
        dead |= {
            o for o in await repo.unfinished_owners() if o not in known and o != self.instance_id
        }
        # Staging left by processes the database no longer knows (or never knew).
        for instance_id in await asyncio.to_thread(self._store.staging_instances):
            if instance_id not in known and instance_id != self.instance_id:
                dead.add(instance_id)
        if not dead:
            return []
        reaped = await repo.reap_operations(sorted(dead))
        for op in reaped:
            logger.warning(
                "operation %s (%s %s) interrupted", op.operation_id, op.skill_id, op.version
            )
            await self._keep_crashed_archive(op)
            if op.version:
                await self._release(op.skill_id, op.version, op.operation_id, op.archive_sha256)
        for instance_id in dead:
            await self._settle_stashes(instance_id)
            await asyncio.to_thread(self._store.remove_instance_staging, instance_id)
        await repo.delete_instances(sorted(dead & known))
        return reaped

    async def _keep_crashed_archive(self, op: Operation) -> None:
        """Keep for Retry the archive a dead process had received whole.

        Its digest is recorded only once every byte arrived and was flushed, so the
        file in the dead process's staging is the whole archive: kept exactly as a
        normal failure keeps it.
        """
        if op.source_type is not SourceType.UPLOAD or not op.archive_sha256 or not op.owner:
            return
        archive = self._store.staging / op.owner / op.operation_id / "archive"
        if await asyncio.to_thread(is_file, archive):
            try:
                await self._blobs.put("kept", op.archive_sha256, archive, move=True)
            except SkillsvcError as exc:
                if exc.reason != UNAVAILABLE_REASON:
                    raise
                # Recovery must not wait for a bucket (a start-up would hang on it):
                # this retry needs a new upload, as after the retention.
                logger.warning("could not keep the bytes of %s: %s", op.operation_id, exc.message)

    async def _settle_stashes(self, instance_id: str) -> None:
        """Finish or undo deletions a dead process left half-done.

        A deleting process moves files out of ``packages/`` before its database
        transaction commits. If the rows are still there, the transaction did not
        commit: the files go back. Otherwise the deletion happened: they go.
        """
        for path, skill_id, version in await asyncio.to_thread(self._store.stashed, instance_id):
            if version is None:
                exists = await self._db.repo.get_definition(skill_id, None) is not None
            else:
                exists = await self._db.repo.get_package(skill_id, version, None) is not None
            if exists and await asyncio.to_thread(self._store.unstash, path, skill_id, version):
                logger.warning(
                    "restored %s %s after an interrupted deletion", skill_id, version or ""
                )
            else:
                await asyncio.to_thread(self._store.purge, path)

    async def _release(
        self, skill_id: str, version: str, operation_id: str, archive_sha256: str = ""
    ) -> None:
        """Give up an operation's claim on its version; remove what it left unrecorded."""
        await self._release_version(skill_id, version, operation_id)
        if archive_sha256:
            await self._unadopt(archive_sha256)

    async def _release_version(self, skill_id: str, version: str, operation_id: str) -> None:
        async with self._db.transaction() as tx:
            await tx.lock_skill(skill_id)
            package = await tx.get_package_for_update(skill_id, version)
            if package is None or package.operation_id != operation_id:
                return
            if package.state is PackageState.READY:
                return
            await tx.mark_package_failed(skill_id, version, operation_id)
            # An activation whose commit failed after the link was swapped (READY,
            # current and DONE commit together): the link goes back to the database's
            # first (the store refuses to remove the version a link points at).
            if await asyncio.to_thread(self._store.current_version, skill_id) == version:
                definition = await tx.get_definition(skill_id, None)
                current = definition.current_version if definition is not None else None
                if current is None:
                    await asyncio.to_thread(self._store.deactivate, skill_id)
                else:
                    await asyncio.to_thread(self._store.activate, skill_id, current)
            # A crash or an outage between the rename into the store and the READY
            # row leaves a directory the database does not know: remove it.
            await asyncio.to_thread(self._store.remove_version, skill_id, version)

    async def _unadopt(self, sha256: str) -> None:
        """An archive stored for a READY that never committed, which no package owns,
        goes back to the kept bytes, for Retry (gc drops it after the retention).

        Separate from the version's release: whoever else took the version over (or a
        READY row of the same bytes) decides under the blob's lock, and a blob store
        that does not answer only delays this (gc reaps unowned archives), never the
        recording of the failure.
        """
        try:
            async with self._db.transaction() as tx:
                await tx.lock_blob(sha256)
                if not await tx.blob_in_use(sha256):
                    await self._blobs.move(sha256, "archive", "kept")
        except SkillsvcError as exc:
            if exc.reason not in (UNAVAILABLE_REASON, STORE_UNAVAILABLE_REASON, STORE_FULL_REASON):
                raise
            logger.warning("left the unowned archive %s to gc: %s", sha256, exc.message)

    async def _update_storage_metric(self) -> None:
        STORAGE_BYTES.set(await asyncio.to_thread(self._store.usage_bytes))
