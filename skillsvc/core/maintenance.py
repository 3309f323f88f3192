"""The operator's tasks behind ``skillsvc fsck``, ``gc``, ``history`` and ``status``.

Each function returns a plain report (JSON-compatible dicts and lists) that the CLI
prints as text or JSON. Repairs of one skill take the same per-skill advisory lock as
installs, and re-check what they saw under it, so they are safe while a server runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any

from skillsvc.blobs import BlobStore, LocalBlobs
from skillsvc.core.models import OperationType
from skillsvc.db import Database
from skillsvc.db._maintenance import Maintenance, ReadyPackage
from skillsvc.errors import DataLoss, NotFound, Unavailable
from skillsvc.store import Store
from skillsvc.validation import Limits, validate_archive

logger = logging.getLogger(__name__)

DAY_SECONDS = 24 * 3600.0
UNOWNED_ARCHIVE_GRACE_SECONDS = 600.0
"""gc leaves an archive no package owns alone until it is this old: an install stores
its archive before it takes its locks and records its package (a bucket upload takes
a while), so a young unowned archive is most likely one in flight on some host.
Reaping it would be safe (the install stores it again under the archive's lock) but
would hold up that skill for a second upload. An age is this host's clock against the
blob store's (a bucket's ``Last-Modified``): a few minutes of skew only shift it."""
MAINTENANCE_INSTANCE = "fsck"


async def _repair_tree(
    db: Database, store: Store, blobs: BlobStore, package: ReadyPackage, limits: Limits
) -> str:
    """Restore a damaged tree from its archive, or mark the package FAILED.

    The archive is the one copy of the package's bytes: when the blob store has lost
    or damaged it, nothing here can recreate it (restore it from a backup).
    """
    maintenance = Maintenance(db.pool)
    dropped = False
    work = await asyncio.to_thread(store.new_work_dir, MAINTENANCE_INSTANCE, uuid.uuid4().hex)
    try:
        archive = work / "archive"
        try:
            await blobs.fetch("archive", package.sha256, archive, expected_size=package.size_bytes)
            intact = True
        except NotFound:
            intact = False
        except DataLoss:
            intact = False
            dropped = await _drop_damaged_archive(db, blobs, package.sha256)
        if intact:
            report = await asyncio.to_thread(
                validate_archive,
                archive,
                work / "tree",
                dataclasses.replace(
                    limits, max_package_bytes=max(limits.max_package_bytes, package.size_bytes)
                ),
                sha256=package.sha256,
            )
            extracted = sorted((f.path, f.size, f.sha256) for f in report.files)
            if report.valid and extracted == sorted(package.files):
                async with db.transaction() as tx:
                    await tx.lock_skill(package.skill_id)
                    await asyncio.to_thread(
                        store.commit_package, work / "tree", package.skill_id, package.version
                    )
                return "restored from its archive"
        currents = await maintenance.current_versions()
        note = _DROPPED_NOTE if dropped else ""
        if currents.get(package.skill_id) == package.version:
            return (
                "NOT repaired: it is the current version and its archive is missing or "
                "damaged (fsck cannot recreate the bytes; restore them from a backup or "
                f"roll back){note}"
            )
        await maintenance.mark_failed(package.skill_id, package.version)
        return (
            "marked FAILED: its archive is missing or damaged "
            f"(fsck cannot recreate the bytes; restore them from a backup){note}"
        )
    finally:
        await asyncio.to_thread(store.make_writable_and_remove, work)


_DROPPED_NOTE = (
    "; the damaged object was removed, so an install of the same bytes stores them again"
)


async def _drop_damaged_archive(db: Database, blobs: BlobStore, sha256: str) -> bool:
    """Remove an archive whose bytes no longer hash to its name; True if removed.

    Its bytes are of no use to anyone (every read ends ``DATA_LOSS``), and while it
    stays, a put of the right bytes may take it for them and skip the upload (an
    object rotted under unchanged metadata). Checked again under the archive's lock,
    so bytes an install stored meanwhile are kept.
    """
    async with db.transaction() as tx:
        await tx.lock_blob(sha256)
        if not await blobs.exists("archive", sha256) or await blobs.intact("archive", sha256):
            return False
        await blobs.delete("archive", sha256)
    logger.warning("fsck removed the damaged archive %s from %s", sha256, blobs.location)
    return True


async def fsck(
    db: Database,
    store: Store,
    *,
    repair: bool,
    limits: Limits,
    stale_after: float,
    blobs: BlobStore | None = None,
) -> dict[str, Any]:
    """Check every READY package against its recorded digests; report (and fix) the rest.

    Each package's tree is checked file by file, and its archive in the blob store
    (local ``blobs/`` or the bucket) is read whole and hashed.
    """
    blobs = blobs if blobs is not None else LocalBlobs(store.root)
    maintenance = Maintenance(db.pool)
    damaged: list[dict[str, Any]] = []
    for package in await maintenance.ready_packages():
        problems = await asyncio.to_thread(
            store.verify_tree, package.skill_id, package.version, package.files
        )
        if not await blobs.intact("archive", package.sha256):
            how = "damaged" if await blobs.exists("archive", package.sha256) else "missing"
            problems.append(
                f"archive blobs/sha256/{package.sha256} is {how} in the blob store "
                f"({blobs.location})"
            )
        if problems:
            entry: dict[str, Any] = {
                "skill_id": package.skill_id,
                "version": package.version,
                "problems": problems,
            }
            if repair:
                entry["repair"] = await _repair_tree(db, store, blobs, package, limits)
            damaged.append(entry)

    states = await maintenance.package_states()
    currents = await maintenance.current_versions()
    orphan_dirs: list[dict[str, Any]] = []
    for skill_id, versions in (await asyncio.to_thread(store.versions_on_disk)).items():
        for version in versions:
            state = states.get((skill_id, version))
            # A directory appears just before its READY row commits; INSTALLING rows
            # are installs in flight, not orphans.
            if state in (None, "FAILED"):
                orphan_dirs.append({"skill_id": skill_id, "version": version, "state": state})
    links: list[dict[str, Any]] = []
    for skill_id, current in currents.items():
        on_disk = await asyncio.to_thread(store.current_version, skill_id)
        if on_disk != current:
            links.append({"skill_id": skill_id, "link": on_disk, "database": current})
    live = await maintenance.live_instances(stale_after)
    orphan_staging = [i for i in await asyncio.to_thread(store.staging_instances) if i not in live]
    in_use = await maintenance.blobs_in_use()
    orphan_blobs = [d for d in await blobs.digests("archive") if d not in in_use]

    if repair:
        for link in links:
            skill_id = str(link["skill_id"])
            async with db.transaction() as tx:
                await tx.lock_skill(skill_id)
                fresh = await tx.get_definition(skill_id, None)
                target = fresh.current_version if fresh else None
                if target is None:
                    await asyncio.to_thread(store.deactivate, skill_id)
                else:
                    await asyncio.to_thread(store.activate, skill_id, target)
                link["repair"] = f"now points at {target}"
        for orphan in orphan_dirs:
            skill_id, version = str(orphan["skill_id"]), str(orphan["version"])
            async with db.transaction() as tx:
                await tx.lock_skill(skill_id)
                # Directories of FAILED packages are gc's (after the retention).
                if await tx.get_package(skill_id, version, None) is None:
                    await asyncio.to_thread(store.remove_version, skill_id, version)
                    orphan["repair"] = "removed"
        for instance_id in orphan_staging:
            await asyncio.to_thread(store.remove_instance_staging, instance_id)
    healthy = not (damaged or orphan_dirs or links or orphan_staging or orphan_blobs)
    return {
        "healthy": healthy,
        "damaged_packages": damaged,
        "orphan_directories": orphan_dirs,
        "current_link_mismatches": links,
        "orphan_staging": orphan_staging,
        "orphan_blobs": orphan_blobs,
        "repaired": repair,
    }


async def gc(
    db: Database,
    store: Store,
    *,
    older_than: float,
    dry_run: bool,
    stale_after: float,
    blobs: BlobStore | None = None,
) -> dict[str, Any]:
    """Remove what failures and crashes left behind, past the retention.

    In the blob store: kept bytes nobody may retry any more, and archives no package
    owns (an install whose READY never committed, a deletion whose blob store did not
    answer) once :data:`UNOWNED_ARCHIVE_GRACE_SECONDS` old (or ``older_than``, if
    shorter): younger ones are listed, not removed.
    """
    blobs = blobs if blobs is not None else LocalBlobs(store.root)
    maintenance = Maintenance(db.pool)
    operations = await maintenance.expired_failed_operations(older_than)
    packages = await maintenance.expired_failed_packages(older_than)
    live = await maintenance.live_instances(stale_after)
    staging = [i for i in await asyncio.to_thread(store.staging_instances) if i not in live]
    if not dry_run:
        await maintenance.delete_operations([op_id for op_id, _, _ in operations])
        for skill_id, version in packages:
            async with db.transaction() as tx:
                await tx.lock_skill(skill_id)
                if await tx.delete_failed_package(skill_id, version):
                    await asyncio.to_thread(store.remove_version, skill_id, version)
        for instance_id in staging:
            await asyncio.to_thread(store.remove_instance_staging, instance_id)
        await asyncio.to_thread(store.purge_trash)
    freed_blobs: list[dict[str, Any]] = []
    # Kept bytes of failed uploads nobody can retry any more (after the rows above are
    # gone, or would be on a dry run).
    kept_in_use = await maintenance.kept_in_use(older_than)
    if dry_run:
        kept_in_use -= {digest for _, _, digest in operations}
    for digest in await blobs.digests("kept"):
        if digest not in kept_in_use:
            size = await blobs.size("kept", digest) or 0
            if not dry_run:
                await blobs.delete("kept", digest)
            freed_blobs.append({"sha256": digest, "bytes": size, "kind": "kept"})
    # Archives of installed packages whose packages are gone, once past the grace.
    in_use = await maintenance.blobs_in_use()
    grace = min(older_than, UNOWNED_ARCHIVE_GRACE_SECONDS)
    young: list[str] = []
    for digest in await blobs.digests("archive"):
        if digest in in_use:
            continue
        written = await blobs.modified("archive", digest)
        if written is None:
            continue  # gone meanwhile
        if time.time() - written < grace:
            young.append(digest)
            continue
        size = await blobs.size("archive", digest) or 0
        if not dry_run:
            async with db.transaction() as tx:
                await tx.lock_blob(digest)
                if await tx.blob_in_use(digest):
                    continue
                await blobs.delete("archive", digest)
        freed_blobs.append({"sha256": digest, "bytes": size, "kind": "blob"})
    return {
        "dry_run": dry_run,
        "older_than_seconds": older_than,
        "failed_operations": len(operations),
        "failed_packages": [{"skill_id": s, "version": v} for s, v in packages],
        "blobs": freed_blobs,
        "freed_bytes": sum(b["bytes"] for b in freed_blobs),
        "orphan_staging": staging,
        "unowned_archives_in_grace": young,
    }


async def history(db: Database, skill_id: str, limit: int) -> list[dict[str, Any]]:
    """A skill's recent operations, newest first, with outcomes and reasons.

    ``NotFound`` when the skill has neither a definition nor any operation, so a
    mistyped id is an error rather than an empty history.
    """
    rows = await Maintenance(db.pool).history(skill_id, limit)
    if not rows and await db.repo.get_definition(skill_id, visible_to=None) is None:
        raise NotFound(f"no skill {skill_id!r} and no operations recorded for it")
    return rows


async def blob_store_status(blobs: BlobStore) -> dict[str, Any]:
    """Where the blob store is and whether it answers (its probe's error if not)."""
    try:
        await blobs.probe()
        error = None
    except Unavailable as exc:
        error = exc.message
    return {"location": blobs.location, "shared": blobs.shared, "up": error is None, "error": error}


async def status(
    db: Database, store: Store, *, window: float = DAY_SECONDS, blobs: BlobStore | None = None
) -> dict[str, Any]:
    """Success rate, mean install time, recent failures, storage per skill, blob store."""
    blobs = blobs if blobs is not None else LocalBlobs(store.root)
    maintenance = Maintenance(db.pool)
    stats = await maintenance.install_stats(window)
    finished = stats["succeeded"] + stats["failed"]
    return {
        "window_seconds": window,
        "installs": stats,
        "success_rate": (stats["succeeded"] / finished) if finished else None,
        "recent_failures": await maintenance.recent_failures(window, 10),
        "storage": await maintenance.storage_per_skill(),
        "store_bytes": await asyncio.to_thread(store.usage_bytes),
        "blob_store": await blob_store_status(blobs),
        "operation_types": [t.value for t in OperationType],
    }
