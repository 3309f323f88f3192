"""The background part of an install: verify, extract, validate, commit, activate, or fail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Final

from skillsvc.core.failures import ValidationFailed, error_of
from skillsvc.core.install_base import (
    PROGRESS_INTERVAL_SECONDS,
    Claim,
    Failure,
    Job,
    is_file,
    store_errors,
    uncancellable,
)
from skillsvc.core.install_requests import InstallRequest
from skillsvc.core.models import (
    Operation,
    OperationState,
    OperationType,
    PackageState,
    SourceType,
    Stage,
)
from skillsvc.core.quotas import check_version_count
from skillsvc.core.recovery import Recovery
from skillsvc.core.reports import report_details
from skillsvc.core.stagetrace import enter_stage, finish_install
from skillsvc.core.versioning import assign_version
from skillsvc.db import OperationChanges, Repository, VersionClaim
from skillsvc.errors import (
    Aborted,
    Cancelled,
    InvalidArgument,
    SkillsvcError,
)
from skillsvc.intake import Spooled, fetch_url
from skillsvc.metrics import (
    INSTALL_DURATION,
    INSTALL_FAILED,
    INSTALL_SUCCESS,
    INSTALL_TOTAL,
    INSTALLS_QUEUED,
    INSTALLS_RUNNING,
    STORAGE_BYTES,
)
from skillsvc.validation import Report

# One logger for every part of the installer, as when it was one module.
logger = logging.getLogger("skillsvc.core.installs")

COMMITTING_MESSAGE: Final = "committing to the store"


class Pipeline(Recovery):
    """Runs an accepted install through its stages and records how it ended."""

    async def _claim(self, op: Operation, version: str, *, committing: bool = False) -> Claim:
        """Reserve ``version`` for ``op``; raise ABORTED if a live install holds it.

        ``committing``: the install commits right after the claim, so the claim's
        transaction writes the COMMITTING stage too (one row tells a watcher the
        version and the stage); the result's ``staged`` says it did.
        """
        new = VersionClaim(
            skill_id=op.skill_id,
            version=version,
            source_type=op.source_type or SourceType.UPLOAD,
            source_uri=op.source_uri,
            operation_id=op.operation_id,
            max_live_versions=self._settings.max_versions_per_skill,
        )
        # The common case, a new version within the quota, in one statement that takes
        # the lock itself; anything else is decided by the transaction below.
        if not committing and op.version == version and await self._db.repo.claim_version(new):
            self._claims[op.operation_id] = version
            return Claim("claimed")
        async with self._db.transaction() as tx:
            await tx.lock_skill(op.skill_id)
            # A new version within the quota is claimed by this one statement.
            package, live, claimed = await tx.claim_new_package(new)
            if not claimed:
                if package is not None and package.state is PackageState.READY:
                    return Claim("ready", package)
                if package is not None and package.state in (
                    PackageState.PENDING,
                    PackageState.INSTALLING,
                ):
                    holder = None
                    if package.operation_id:
                        holder = await tx.get_operation(package.operation_id, None)
                    if holder is not None and not holder.state.terminal:
                        raise Aborted(
                            f"{op.skill_id} {version} is being installed by operation "
                            f"{holder.operation_id}; retry when it has finished",
                            reason="CONCURRENT_INSTALL",
                            metadata={"operation_id": holder.operation_id},
                        )
                if package is None or package.state is PackageState.FAILED:
                    # A new live version: checked under the skill lock, in the
                    # transaction that creates it, so concurrent installs cannot
                    # overshoot the quota.
                    check_version_count(op.skill_id, live, self._settings.max_versions_per_skill)
                await tx.claim_package(
                    skill_id=op.skill_id,
                    version=version,
                    state=PackageState.INSTALLING,
                    source_type=new.source_type,
                    source_uri=op.source_uri,
                    operation_id=op.operation_id,
                )
            # A version read from the manifest goes on the operation in the claim's
            # transaction, so recovery always knows which claim to release.
            if committing:
                enter_stage(Stage.COMMITTING, COMMITTING_MESSAGE)
                changes = OperationChanges(
                    state=OperationState.RUNNING,
                    stage=Stage.COMMITTING,
                    message=COMMITTING_MESSAGE,
                    version=version,
                )
                await tx.update_operation(op.operation_id, changes)
            elif op.version != version:
                await tx.update_operation(op.operation_id, OperationChanges(version=version))
        # Remembered here: should the failure be settled while the operation's row
        # does not name the version yet, the claim is still released.
        self._claims[op.operation_id] = version
        return Claim("claimed", staged=committing)

    async def _stage(self, op: Operation, stage: Stage, message: str, **changes: Any) -> Operation:
        enter_stage(stage, message)
        return await self._db.repo.update_operation(
            op.operation_id,
            OperationChanges(state=OperationState.RUNNING, stage=stage, message=message, **changes),
        )

    async def _run(self, job: Job) -> None:
        waiting = True
        try:
            async with self._slots:
                waiting = False
                INSTALLS_QUEUED.dec()
                INSTALLS_RUNNING.inc()
                try:
                    await self._pipeline(job)
                finally:
                    INSTALLS_RUNNING.dec()
        except BaseException as exc:
            await uncancellable(
                self._fail(job.op, exc, job.work, started=job.started, spooled=job.spooled)
            )
            if not isinstance(exc, Exception):
                raise
        finally:
            if waiting:
                INSTALLS_QUEUED.dec()
            self._dismiss()
            self._claims.pop(job.op.operation_id, None)

    async def _pipeline(self, job: Job) -> None:
        op, req, work, spooled, started = job.op, job.req, job.work, job.spooled, job.started
        if spooled is None:
            spooled = await self._download(op, req, work / "archive")
        # The digest was computed while the bytes arrived: checking it is instant, so
        # no VERIFYING row (it would tell a watcher nothing).
        if req.sha256 and req.sha256 != spooled.sha256:
            raise InvalidArgument(
                f"the archive's SHA-256 is {spooled.sha256}, not the expected {req.sha256}",
                reason="CHECKSUM_MISMATCH",
            )
        if req.version and not job.claimed:
            await self._reinstall(op, req.version, spooled, work, started=started)
            return
        # One step reads, extracts and validates (validate_archive): one stage row. A
        # VALIDATING row written after it would tell a watcher nothing.
        op = await self._stage(op, Stage.EXTRACTING, "extracting and validating the package")
        with store_errors("extract the package"):
            report = await self._archives.validate(
                spooled.path,
                work / "tree",
                self._settings.limits,
                sha256=spooled.sha256,
                expected_name=req.skill_id,
                expected_version=req.version or None,
            )
        if not report.valid:
            raise ValidationFailed(report)
        assert report.manifest is not None
        # The request's version, else the manifest's (validate_archive resolved it),
        # else one the service assigns (SPEC §4).
        version = req.version or report.manifest.version
        staged = False  # whether a claim's transaction wrote COMMITTING already
        if not version:
            assigned = await assign_version(
                self._db,
                op,
                spooled.sha256,
                max_versions_per_skill=self._settings.max_versions_per_skill,
            )
            version = assigned.version
            if not assigned.identical:
                self._claims[op.operation_id] = version
            if assigned.identical:
                await self._reinstall(op, version, spooled, work, started=started)
                return
            self._claims[op.operation_id] = version  # as _claim does
        elif not job.claimed:
            # Nothing happens between this claim and the commit: its row says COMMITTING.
            claim = await self._claim(op, version, committing=True)
            if claim.kind == "ready":
                await self._reinstall(op, version, spooled, work, started=started)
                return
            staged = claim.staged
        if not staged:
            await self._stage(op, Stage.COMMITTING, COMMITTING_MESSAGE, version=version)
        # Files move and the READY row commits together or not at all: a shutdown's
        # cancellation waits for the commit to end (an interrupted one would leave
        # an orphan blob or directory behind the cleanup).
        await uncancellable(self._commit(op, version, spooled, report, job))
        # Counted, not measured: walking the store after every install made each one
        # cost more than the last. The heartbeat re-measures now and then.
        archive_bytes = 0 if self._blobs.shared else spooled.size_bytes  # a bucket's are not
        STORAGE_BYTES.inc(report.unpacked_bytes + archive_bytes)

    async def _commit(
        self, op: Operation, version: str, spooled: Spooled, report: Report, job: Job
    ) -> None:
        req, work, started = job.req, job.work, job.started
        files = [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "executable": f.executable}
            for f in report.files
        ]
        manifest = report_details(report)["validation_report"]["manifest"]
        manifest["version"] = version  # an assigned version is the package's too
        # The slow parts before any lock or pooled connection is taken: sealing and
        # flushing the files, and storing the archive in the blob store (a bucket
        # upload takes a while). Should READY never commit, recovery turns the unowned
        # archive back into kept bytes (Recovery._release) and gc reaps what is left.
        await asyncio.to_thread(self._store.seal_package, work / "tree")
        await self._blobs.put("archive", spooled.sha256, spooled.path)
        async with self._db.transaction() as tx:
            # The blob's lock is held until READY commits, so a deletion cannot drop an
            # archive this install found in the store and reused.
            await tx.lock_skill_and_blob(op.skill_id, spooled.sha256)
            if not await self._blobs.exists("archive", spooled.sha256):
                # gc or a deletion dropped it between the upload and the lock.
                await self._blobs.put("archive", spooled.sha256, spooled.path)
            final = await asyncio.to_thread(
                self._store.place_package, work / "tree", req.skill_id, version
            )
            # The tree was moved out; the work directory holds the staged archive only.
            await asyncio.to_thread(self._store.make_writable_and_remove, work)
            message = (
                f"{version} installed and current" if op.activate else "installed (not activated)"
            )
            # READY, current and DONE in one statement of one transaction, one skill lock.
            ok = await tx.mark_package_ready_and_done(
                op.skill_id,
                version,
                op.operation_id,
                sha256=spooled.sha256,
                size_bytes=spooled.size_bytes,
                unpacked_bytes=report.unpacked_bytes,
                file_count=report.file_count,
                manifest=manifest,
                files=files,
                path=str(final),
                make_current=op.activate,
                message=message,
            )
            if not ok:
                raise Aborted("the version was taken over by another install", reason="CLAIM_LOST")
            if op.activate:
                # The link follows the database inside the transaction, as in _conclude.
                await asyncio.to_thread(self._store.activate, op.skill_id, version)
        # Counted once the commit held: a commit that fails is counted as a failure.
        self._succeeded(op, message, started)

    async def _download(self, op: Operation, req: InstallRequest, path: Path) -> Spooled:
        op = await self._stage(op, Stage.DOWNLOADING, "downloading")
        latest = [0, 0]

        def progress(done: int, total: int | None) -> None:
            latest[0], latest[1] = done, total or 0

        async def report_progress() -> None:
            sent = -1
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
                if latest[0] != sent:
                    sent = latest[0]
                    await self._db.repo.update_operation(
                        op.operation_id,
                        OperationChanges(bytes_done=latest[0], bytes_total=latest[1]),
                    )

        reporter = asyncio.create_task(report_progress())
        try:
            spooled = await fetch_url(
                req.url,
                path,
                max_bytes=self._settings.limits.max_package_bytes,
                policy=self._settings.url_policy,
                progress=progress,
            )
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, SkillsvcError):
                await reporter
        await self._db.repo.update_operation(
            op.operation_id,
            OperationChanges(
                bytes_done=spooled.size_bytes,
                bytes_total=spooled.size_bytes,
                archive_sha256=spooled.sha256,
            ),
        )
        return spooled

    async def _reinstall(
        self, op: Operation, version: str, spooled: Spooled, work: Path, *, started: float
    ) -> None:
        """The version is READY already: same bytes succeed untouched, others are refused."""
        async with self._db.transaction() as tx:
            await tx.lock_skill(op.skill_id)
            package = await tx.get_package_for_update(op.skill_id, version)
            if package is None or package.state is not PackageState.READY:
                raise Aborted(
                    f"{op.skill_id} {version} changed during the install; retry",
                    reason="CONCURRENT_INSTALL",
                )
            if package.sha256 != spooled.sha256:
                raise self._immutable(op.skill_id, version)  # the bytes stay for a retry
            await asyncio.to_thread(self._store.make_writable_and_remove, work)
            message = await self._conclude(tx, op, version, "already installed")
        self._succeeded(op, message, started)

    async def _conclude(self, tx: Repository, op: Operation, version: str, inactive: str) -> str:
        """Make ``version`` current if asked, and end the operation, in ``tx``; returns its
        message (``inactive`` when not activated).

        ``tx`` holds the skill's lock. The link follows the database inside it; should
        the commit then fail, releasing the version puts the link back (see
        ``Recovery._release``), and if the process dies first, start-up reconciles it.
        The caller counts the success once the commit held.
        """
        message = inactive
        if op.activate:
            message = f"{version} installed and current"
            await tx.set_current_version(
                op.skill_id, version, op.operation_id, OperationType.INSTALL
            )
        await tx.update_operation(
            op.operation_id,
            OperationChanges(
                state=OperationState.SUCCEEDED, stage=Stage.DONE, message=message, version=version
            ),
        )
        if op.activate:
            await asyncio.to_thread(self._store.activate, op.skill_id, version)
        return message

    def _succeeded(self, op: Operation, message: str, started: float) -> None:
        """Count and trace a succeeded install (once its DONE row has committed)."""
        INSTALL_TOTAL.labels(
            INSTALL_SUCCESS, (op.source_type or SourceType.UPLOAD).value.lower()
        ).inc()
        INSTALL_DURATION.observe(time.monotonic() - started)
        finish_install(None, message)

    async def _fail(
        self,
        op: Operation,
        exc: BaseException,
        work: Path | None,
        *,
        started: float,
        spooled: Spooled | None = None,
    ) -> None:
        """Keep a whole archive, remove staging, release the version, record the failure.

        Cleaning up first means a watcher that sees FAILED also sees nothing left
        behind. When the database is away, the failure waits in memory and the
        heartbeat settles it as soon as the database answers again.
        """
        failure = Failure(
            op=op,
            error=error_of(exc),
            state=OperationState.CANCELLED if isinstance(exc, Cancelled) else OperationState.FAILED,
            work=work or Path(),
            archive_sha256=spooled.sha256 if spooled is not None else "",
            version=self._claims.pop(op.operation_id, ""),
        )
        INSTALL_TOTAL.labels(
            INSTALL_FAILED, (op.source_type or SourceType.UPLOAD).value.lower()
        ).inc()
        INSTALL_DURATION.observe(time.monotonic() - started)
        finish_install(failure.error)
        try:
            await self._settle(failure)
        except Exception as settle_error:
            logger.warning(
                "could not record the failure of %s yet (retried every heartbeat): %s",
                op.operation_id,
                settle_error,
                exc_info=not isinstance(settle_error, SkillsvcError),
            )
            self._unsettled[op.operation_id] = failure

    async def _settle(self, failure: Failure) -> None:
        """Do what :meth:`_fail` does for one failure; idempotent, raises if the DB is away."""
        op, work = failure.op, failure.work
        current = await self._db.repo.get_operation(op.operation_id, None)
        sha256 = failure.archive_sha256 or (current.archive_sha256 if current else "")
        archive = work / "archive"
        kept = ""
        if (
            current is not None
            and current.source_type is SourceType.UPLOAD
            and sha256
            and work != Path()
            and await asyncio.to_thread(is_file, archive)
        ):
            # Keep the uploaded bytes for a retry; garbage collection drops them
            # after SKILLSVC_FAILED_RETENTION.
            try:
                await self._blobs.put("kept", sha256, archive, move=True)
            except SkillsvcError as keep_error:
                logger.warning(
                    "could not keep the bytes of %s: %s", op.operation_id, keep_error.message
                )
        if sha256 and await self._kept_now(sha256):
            kept = sha256
        if work != Path():
            await asyncio.to_thread(self._store.make_writable_and_remove, work)
        version = (current.version if current is not None else "") or failure.version
        if version:
            await self._release(op.skill_id, version, op.operation_id, sha256)
        if current is not None:
            error = failure.error
            await self._db.repo.update_operation(
                op.operation_id,
                OperationChanges(
                    state=failure.state,
                    stage=Stage.FAILED,
                    message=error.message,
                    error=error,
                    archive_sha256=kept or None,
                ),
            )

    async def _settle_failures(self) -> None:
        """Record the failures the database missed while it was away."""
        for operation_id, failure in list(self._unsettled.items()):
            await self._settle(failure)
            del self._unsettled[operation_id]
            logger.info("recorded the failure of %s after the database returned", operation_id)

    async def _kept_now(self, sha256: str) -> bool:
        """Whether bytes with this digest are kept (False when the store cannot say)."""
        try:
            return await self._blobs.exists("kept", sha256)
        except SkillsvcError as exc:
            logger.warning("could not check the kept bytes %s: %s", sha256, exc.message)
            return False
