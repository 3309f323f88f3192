"""The install pipeline: accept, receive, verify, extract, validate, commit, activate.

An install is accepted by :meth:`Installer.install` (the spec is checked, the
operation recorded, the upload spooled with its SHA-256 computed on the way in) and
then runs in the background, at most ``max_concurrent`` at a time:

    QUEUED → [DOWNLOADING] → VERIFYING → EXTRACTING → VALIDATING → COMMITTING
           → [ACTIVATING] → DONE                       (any stage) → FAILED

Atomicity: everything happens in a private staging directory until COMMITTING,
which renames the verified tree and archive into the store and then marks the
package READY in one transaction. A failure at any stage removes the staging
directory and releases the version; a crash is cleaned up by recovery (the owning
process's operations are reaped, orphan version directories removed, ``current``
links reconciled with the database, which is the source of truth).

Versions are serialised per skill by a transaction-scoped advisory lock; a version
held by a live install is not taken by a second one (ABORTED).

Faults lose nothing (SPEC §4):

- Admission: a place among ``max_concurrent + max_queued`` is taken before an upload's
  bytes are read and given back when the install ends or fails.
- Shutdown: staging is removed only after every upload still arriving and every
  install has ended; past the grace they are cancelled, and a cancellation waits for
  the worker thread it interrupts (and for a commit to finish) before cleaning up.
- A failure the database cannot record (an outage) stays in memory with its staging
  directory; the heartbeat settles it (archive kept, version released, FAILED
  recorded) as soon as the database answers again.
- Recovery after a crash keeps an upload that had arrived whole, as a failure does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from skillsvc.core.definitions import Definitions
from skillsvc.core.models import (
    Caller,
    Operation,
    OperationError,
    OperationState,
    OperationType,
    Package,
    PackageState,
    SourceType,
    Stage,
)
from skillsvc.core.naming import (
    MAX_VERSION_LENGTH,
    SKILL_NAME_RULE,
    is_valid_semver,
    is_valid_skill_name,
)
from skillsvc.core.progress import parse_operation_id
from skillsvc.core.quotas import check_version_quota
from skillsvc.core.stagetrace import begin_install, enter_stage, finish_install
from skillsvc.core.versioning import assign_version
from skillsvc.db import Database, NewOperation, OperationChanges, Repository
from skillsvc.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SkillsvcError,
)
from skillsvc.intake import Spooled, Spooler, UrlPolicy, fetch_url
from skillsvc.loops import Backoff, run_forever
from skillsvc.metrics import (
    INSTALL_DURATION,
    INSTALL_FAILED,
    INSTALL_SUCCESS,
    INSTALL_TOTAL,
    INSTALLS_QUEUED,
    INSTALLS_RUNNING,
    STORAGE_BYTES,
)
from skillsvc.store import Store, store_error
from skillsvc.validation import Code, Limits, Report, Severity, Violation, validate_archive

logger = logging.getLogger(__name__)

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
MAX_REQUEST_ID: Final = 128
# The store's size is measured from disk every this many heartbeats (a full walk), and
# counted up by installs in between.
STORAGE_RECOUNT_BEATS: Final = 60
# Byte progress is written to the database (and so notified) at most this often.
PROGRESS_INTERVAL_SECONDS: Final = 0.25


@dataclass(frozen=True)
class InstallRequest:
    """A validated-to-be install spec, in domain terms."""

    skill_id: str
    """The skill to install into."""
    version: str
    """Requested version; empty = from the manifest."""
    source_type: SourceType | None
    """Upload or URL; None when the request named neither."""
    url: str
    """URL sources: the URL."""
    declared_size: int
    """Uploads: the exact size announced."""
    sha256: str
    """Expected digest; empty = not checked."""
    activate: bool
    """Make current when done."""
    request_id: str
    """Idempotency key; empty = none."""


@dataclass(frozen=True)
class InstallerSettings:
    """The knobs of the pipeline."""

    limits: Limits
    """Validator limits (archive size, unpacked size, files …)."""
    url_policy: UrlPolicy
    """How URL sources are fetched."""
    max_concurrent: int = 50
    """Installs running at once."""
    max_queued: int = 1000
    """Installs waiting for a slot before new ones are refused. Uploads still being
    received count as waiting: at most ``max_concurrent + max_queued`` installs are
    admitted at once, from acceptance (before a byte is read) to their end."""
    heartbeat_seconds: float = 5.0
    """How often this process proves it is alive; others reap it after 3 missed beats."""
    max_versions_per_skill: int = 50
    """Version quota: versions (FAILED aside) one skill may hold."""


@dataclass
class _Claim:
    """The outcome of reserving a version for an operation."""

    kind: str
    """``claimed``, ``ready`` (same version installed) or ``busy``."""
    package: Package | None = None
    """The existing package for ``ready``/``busy``."""


def report_details(report: Report) -> dict[str, Any]:
    """A validation report as the JSON stored with a failed operation."""
    manifest = None
    if report.manifest is not None:
        m = report.manifest
        manifest = {
            "name": m.name,
            "description": m.description,
            "version": m.version,
            "license": m.license,
            "compatibility": m.compatibility,
            "allowed_tools": list(m.allowed_tools),
            "metadata": dict(m.metadata),
        }
    return {
        "validation_report": {
            "valid": report.valid,
            "violations": [
                {
                    "code": v.code.value,
                    "path": v.path,
                    "message": v.message,
                    "severity": v.severity.value,
                }
                for v in report.violations
            ],
            "manifest": manifest,
            "sha256": report.sha256,
            "size_bytes": report.size_bytes,
            "unpacked_bytes": report.unpacked_bytes,
            "file_count": report.file_count,
        }
    }


def check_request(
    req: InstallRequest, *, skill_id_required: bool = True, what: str = "install spec"
) -> None:
    """Reject malformed specs with every bad field named (``what`` names the request)."""
    violations: list[FieldViolation] = []
    if not req.skill_id:
        if skill_id_required:
            violations.append(FieldViolation("spec.skill_id", "is required"))
    elif not is_valid_skill_name(req.skill_id):
        violations.append(FieldViolation("spec.skill_id", f"must be {SKILL_NAME_RULE}"))
    if req.version and (len(req.version) > MAX_VERSION_LENGTH or not is_valid_semver(req.version)):
        violations.append(
            FieldViolation(
                "spec.version", f"must be a semantic version (2.0.0); got {req.version!r}"
            )
        )
    if req.source_type is None:
        violations.append(FieldViolation("spec.source", "set either upload or url"))
    elif req.source_type is SourceType.UPLOAD and req.declared_size <= 0:
        violations.append(
            FieldViolation("spec.upload.size_bytes", "must be the archive's size in bytes (> 0)")
        )
    elif req.source_type is SourceType.URL and not req.url:
        violations.append(FieldViolation("spec.url", "is required for a URL source"))
    if req.sha256 and not _SHA256_HEX.fullmatch(req.sha256):
        violations.append(FieldViolation("spec.sha256", "must be 64 lower-case hex digits"))
    if len(req.request_id) > MAX_REQUEST_ID:
        violations.append(
            FieldViolation("spec.request_id", f"must be at most {MAX_REQUEST_ID} characters")
        )
    if violations:
        raise InvalidArgument(f"invalid {what}", violations)


@contextlib.contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """The store's error for an ``OSError`` of its filesystem (a full disk, …)."""
    try:
        yield
    except OSError as exc:
        raise store_error(exc, action) from exc


def _error_of(exc: BaseException) -> OperationError:
    if isinstance(exc, asyncio.CancelledError):
        return OperationError(
            "ABORTED", "INTERRUPTED", "interrupted: the upload or the server stopped"
        )
    if isinstance(exc, _ValidationFailed):
        return OperationError(exc.status, exc.reason, exc.message, report_details(exc.report))
    if isinstance(exc, ResourceExhausted) and exc.violations:
        quota = [{"subject": v.subject, "description": v.description} for v in exc.violations]
        return OperationError(exc.status, exc.reason, exc.message, {"quota_violations": quota})
    if isinstance(exc, SkillsvcError):
        return OperationError(exc.status, exc.reason, exc.message)
    logger.error("install failed unexpectedly", exc_info=exc)
    return OperationError("INTERNAL", "INTERNAL", "internal error; the server logged the details")


class _ValidationFailed(SkillsvcError):
    """The package broke the rules; carries the report for the operation's details."""

    status = "INVALID_ARGUMENT"
    default_reason = "VALIDATION_FAILED"

    def __init__(self, report: Report) -> None:
        first = next(v for v in report.violations if v.severity.value == "ERROR")
        count = sum(1 for v in report.violations if v.severity.value == "ERROR")
        where = f" ({first.path})" if first.path else ""
        super().__init__(
            f"package validation failed with {count} error(s); first: "
            f"{first.code.value}{where}: {first.message}"
        )
        self.report = report


@dataclass(frozen=True)
class _Failure:
    """A failed install whose cleanup and record are not (yet) all done."""

    op: Operation
    """The operation as this process last knew it."""
    error: OperationError
    """What to record."""
    state: OperationState
    """FAILED or CANCELLED."""
    work: Path
    """Its staging directory (removed once the archive is kept)."""
    archive_sha256: str
    """Digest of an archive that arrived whole, as computed here; empty if none."""
    version: str
    """The version this process claimed for it, if any."""


T = TypeVar("T")


def _is_file(path: Path) -> bool:
    return path.is_file()


async def _blocking(func: Callable[..., T], *args: Any) -> T:
    """Run ``func`` in a thread; if cancelled, let the thread end before re-raising.

    A thread cannot be stopped: were the caller to clean up at once, it would race
    with the thread still writing (a staging directory removed under an extraction
    fails with "Directory not empty", a commit finishing after its cleanup leaves an
    orphan blob).
    """
    return await _uncancellable(asyncio.to_thread(func, *args))


async def _uncancellable(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile, then re-raise.

    Unlike ``asyncio.shield`` alone, a second cancellation (the server's and the
    installer's at the end of a shutdown grace) does not return before ``work`` ends.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                if task.cancelled():
                    raise
                task.exception()  # seen: the cancellation is what the caller gets
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


@dataclass(frozen=True)
class _Job:
    """An accepted install on its way through the background stages."""

    op: Operation
    """Its operation as accepted."""
    req: InstallRequest
    """What was asked."""
    work: Path
    """Its private staging directory."""
    spooled: Spooled | None
    """The received archive; None for a URL source not yet downloaded."""
    claimed: bool
    """Whether the version was reserved at acceptance (the request named it)."""
    started: float
    """``time.monotonic()`` at acceptance, for the duration metric."""


class Installer:
    """Runs installs for this process and recovers after others."""

    def __init__(
        self,
        db: Database,
        store: Store,
        definitions: Definitions,
        settings: InstallerSettings,
        *,
        instance_id: str | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._definitions = definitions
        self._settings = settings
        self.instance_id = instance_id or uuid.uuid4().hex
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        # Installs admitted and not yet ended: receiving, waiting or running.
        self._admitted = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # RPC tasks inside _begin (receiving an upload): staging stays until they end.
        self._accepting: set[asyncio.Task[Any]] = set()
        # Failures not recorded yet (the database was away): settled by the heartbeat.
        self._unsettled: dict[str, _Failure] = {}
        # Versions claimed by operations, for a failure the database has not seen.
        self._claims: dict[str, str] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self._beats = 0
        self._hostname = socket.gethostname()

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Register this process, recover after dead ones, start the heartbeat."""
        await self._db.repo.register_instance(self.instance_id, self._hostname, os.getpid())
        await asyncio.to_thread(self._store.instance_staging, self.instance_id)
        await asyncio.to_thread(self._store.purge_trash)
        await self.recover()
        await self.reconcile_current_links()
        await self._update_storage_metric()
        self._heartbeat = asyncio.create_task(
            run_forever(
                "install heartbeat",
                self._beat,
                interval=self._settings.heartbeat_seconds,
                # Capped at half a beat: once the database is back, failures are
                # settled and peers' work recovered within two heartbeats.
                backoff=Backoff(
                    base=self._settings.heartbeat_seconds / 10,
                    cap=self._settings.heartbeat_seconds / 2,
                ),
                log=logger,
            ),
            name="install-heartbeat",
        )

    async def stop(self, grace: float) -> None:
        """Let uploads and installs finish within ``grace``, interrupt the rest, clean up.

        Uploads still arriving are RPCs of the server (which stops them after the same
        grace); the staging directory is removed only once every one of them and every
        install has ended, and only if every failure could be recorded.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        interrupted: set[asyncio.Task[Any]] = set()
        while busy := self._accepting | self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                # Interrupted installs end FAILED "interrupted", their whole archives
                # kept for Retry (see _fail). Each is cancelled once.
                for task in busy - interrupted:
                    task.cancel()
                interrupted |= busy
            await asyncio.wait(
                busy, timeout=max(remaining, 0) or None, return_when=asyncio.FIRST_COMPLETED
            )
        if self._unsettled:
            with contextlib.suppress(Exception):
                await self._settle_failures()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        try:
            await self._db.repo.delete_instances([self.instance_id])
        except SkillsvcError as exc:
            logger.warning("could not unregister this process: %s", exc.message)
        if self._unsettled:
            # The next start recovers them from staging (archives kept for Retry).
            logger.warning(
                "%d failed install(s) could not be recorded; staging kept for recovery",
                len(self._unsettled),
            )
            return
        try:
            await asyncio.to_thread(self._store.remove_instance_staging, self.instance_id)
        except SkillsvcError as exc:
            logger.warning("could not remove this process's staging: %s", exc.message)

    async def _beat(self) -> None:
        """One heartbeat: prove liveness, settle failures, recover after dead peers."""
        # Re-registers too: a peer that took this process for dead during a database
        # outage has deleted its row.
        await self._db.repo.register_instance(self.instance_id, self._hostname, os.getpid())
        self._beats += 1
        if self._unsettled:
            await self._settle_failures()
        await self.recover()
        if self._beats % STORAGE_RECOUNT_BEATS == 0:
            await self._update_storage_metric()

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
        if await asyncio.to_thread(_is_file, archive):
            await asyncio.to_thread(self._store.keep_archive, archive, op.archive_sha256)

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
        async with self._db.transaction() as tx:
            await tx.lock_skill(skill_id)
            package = await tx.get_package_for_update(skill_id, version)
            if package is None or package.operation_id != operation_id:
                return
            if package.state is PackageState.READY:
                return
            await tx.mark_package_failed(skill_id, version, operation_id)
            # A crash or an outage between the rename into the store and the READY
            # row leaves a directory the database does not know: remove it.
            await asyncio.to_thread(self._store.remove_version, skill_id, version)
            if archive_sha256:
                # ... and an archive adopted as a blob that no package owns: it goes
                # back to the kept bytes, for Retry (gc drops it after retention).
                await tx.lock_blob(archive_sha256)
                if not await tx.blob_in_use(archive_sha256):
                    await asyncio.to_thread(self._store.unadopt_blob, archive_sha256)

    async def reconcile_current_links(self) -> None:
        """Make every ``current`` link agree with the database's current version."""
        definitions = await self._db.repo.list_current_versions()
        for skill_id, version in definitions:
            on_disk = await asyncio.to_thread(self._store.current_version, skill_id)
            if on_disk == version:
                continue
            logger.warning("reconciling %s/current: %s → %s", skill_id, on_disk, version)
            if version is None:
                await asyncio.to_thread(self._store.deactivate, skill_id)
            else:
                await asyncio.to_thread(self._store.activate, skill_id, version)

    async def _update_storage_metric(self) -> None:
        STORAGE_BYTES.set(await asyncio.to_thread(self._store.usage_bytes))

    # -- accepting an install ---------------------------------------------------------

    async def install(
        self, caller: Caller, req: InstallRequest, chunks: AsyncIterator[bytes] | None
    ) -> Operation:
        """Accept an install, receive its bytes (uploads), and start it in the background."""
        check_request(req)
        definition = await self._definitions.get(caller, req.skill_id)
        self._definitions.check_can_manage(caller, definition.tenant)
        assert req.source_type is not None  # check_request
        upload = req.source_type is SourceType.UPLOAD
        self._admit()  # before a byte of the upload is read
        try:
            op, created = await self._insert_install(caller, req, upload)
        except BaseException:
            self._dismiss()
            raise
        if not created:
            self._dismiss()
            return op  # the same request_id was seen before: answer with that operation
        return await self._begin(op, req, chunks=chunks)

    async def _insert_install(
        self, caller: Caller, req: InstallRequest, upload: bool
    ) -> tuple[Operation, bool]:
        return await self._db.repo.insert_operation(
            NewOperation(
                operation_id=str(uuid.uuid4()),
                type=OperationType.INSTALL,
                skill_id=req.skill_id,
                version=req.version,
                state=OperationState.PENDING,
                stage=Stage.RECEIVING if upload else Stage.QUEUED,
                requested_by=caller.subject,
                owner=self.instance_id,
                bytes_total=req.declared_size if upload else 0,
                source_type=req.source_type,
                source_uri=req.url,
                expected_sha256=req.sha256,
                activate=req.activate,
                request_id=req.request_id,
                requested_version=req.version,
                message="receiving" if upload else "queued",
            )
        )

    def _admit(self) -> None:
        """Take a place among the admitted installs, or refuse: the queue is full."""
        limit = self._settings.max_concurrent + self._settings.max_queued
        if self._admitted >= limit:
            raise ResourceExhausted(
                f"the install queue is full ({self._settings.max_concurrent} running, "
                f"{self._settings.max_queued} waiting or receiving); retry later",
                reason="INSTALL_QUEUE_FULL",
            )
        self._admitted += 1

    def _dismiss(self) -> None:
        """Give back a place taken by :meth:`_admit`."""
        self._admitted -= 1

    async def _begin(
        self,
        op: Operation,
        req: InstallRequest,
        *,
        chunks: AsyncIterator[bytes] | None = None,
        kept: Spooled | None = None,
    ) -> Operation:
        """Reserve the version, get the bytes in, and start the background part.

        Owns the place :meth:`_admit` took: given back here on failure, else when
        the background part ends.
        """
        started = time.monotonic()
        this = asyncio.current_task()
        if this is not None:
            self._accepting.add(this)
        try:
            return await self._accept(op, req, chunks, kept, started)
        except BaseException:
            self._dismiss()
            raise
        finally:
            if this is not None:
                self._accepting.discard(this)

    async def _accept(
        self,
        op: Operation,
        req: InstallRequest,
        chunks: AsyncIterator[bytes] | None,
        kept: Spooled | None,
        started: float,
    ) -> Operation:
        try:
            work = await asyncio.to_thread(
                self._store.new_work_dir, self.instance_id, op.operation_id
            )
        except BaseException as exc:
            await _uncancellable(self._fail(op, exc, None, started=started))
            raise
        begin_install(op)
        claimed = False
        spooled: Spooled | None = None
        try:
            if req.version:
                claim = await self._claim(op, req.version)
                claimed = claim.kind == "claimed"
                if (
                    claim.kind == "ready"
                    and req.sha256
                    and claim.package
                    and claim.package.sha256 != req.sha256
                ):
                    raise self._immutable(op.skill_id, req.version)
            if chunks is not None:
                spooled = await self._receive(op, work / "archive", req.declared_size, chunks)
                op = await self._db.repo.update_operation(
                    op.operation_id,
                    OperationChanges(
                        stage=Stage.QUEUED,
                        bytes_done=spooled.size_bytes,
                        archive_sha256=spooled.sha256,
                        message="queued",
                    ),
                )
                enter_stage(Stage.QUEUED, "queued")
            elif kept is not None:
                archive = work / "archive"
                if not await asyncio.to_thread(self._store.link_archive, kept.sha256, archive):
                    raise FailedPrecondition(
                        "the uploaded bytes of the failed attempt are no longer kept; "
                        "install again with a new upload",
                        reason="RETRY_BYTES_EXPIRED",
                    )
                spooled = dataclasses.replace(kept, path=archive)
        except asyncio.CancelledError:
            # While receiving, a cancellation is the caller hanging up, unless this
            # process is shutting down.
            cause: BaseException = asyncio.CancelledError()
            if not self._stopping:
                cause = Cancelled("the client cancelled the upload")
            await _uncancellable(self._fail(op, cause, work, started=started, spooled=spooled))
            raise
        except BaseException as exc:
            await _uncancellable(self._fail(op, exc, work, started=started, spooled=spooled))
            raise
        INSTALLS_QUEUED.inc()
        task = asyncio.create_task(
            self._run(_Job(op, req, work, spooled, claimed=claimed, started=started)),
            name=f"install-{op.operation_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return op

    async def retry(self, caller: Caller, operation_id: str) -> Operation:
        """Run a FAILED install again as a new operation, from the same source."""
        failed = await self._db.repo.get_operation(
            parse_operation_id(operation_id), caller.visible_tenant
        )
        if failed is None:
            raise NotFound(f"operation {operation_id} not found")
        # Who may act comes before what state it is in, as for every other write.
        definition = await self._definitions.get(caller, failed.skill_id)
        self._definitions.check_can_manage(caller, definition.tenant)
        if failed.type is not OperationType.INSTALL or failed.state is not OperationState.FAILED:
            raise FailedPrecondition(
                f"operation {failed.operation_id} is a {failed.type.value.lower()} in state "
                f"{failed.state.value}; only FAILED installs can be retried",
                reason="NOT_RETRYABLE",
            )
        upload = failed.source_type is SourceType.UPLOAD
        if upload and not failed.archive_sha256:
            raise FailedPrecondition(
                "the failed attempt never received all of its bytes; install again",
                reason="RETRY_BYTES_EXPIRED",
            )
        self._admit()
        try:
            op, kept = await self._insert_retry(caller, failed, upload)
        except BaseException:
            self._dismiss()
            raise
        req = InstallRequest(
            skill_id=failed.skill_id,
            version=failed.requested_version,
            source_type=failed.source_type,
            url=failed.source_uri,
            declared_size=failed.bytes_total,
            sha256=failed.expected_sha256,
            activate=failed.activate,
            request_id="",
        )
        return await self._begin(op, req, kept=kept)

    async def _insert_retry(
        self, caller: Caller, failed: Operation, upload: bool
    ) -> tuple[Operation, Spooled | None]:
        op, _ = await self._db.repo.insert_operation(
            NewOperation(
                operation_id=str(uuid.uuid4()),
                type=OperationType.INSTALL,
                skill_id=failed.skill_id,
                version=failed.requested_version,
                state=OperationState.PENDING,
                stage=Stage.QUEUED,
                requested_by=caller.subject,
                owner=self.instance_id,
                attempt=failed.attempt + 1,
                retry_of=failed.operation_id,
                bytes_total=failed.bytes_total if upload else 0,
                source_type=failed.source_type,
                source_uri=failed.source_uri,
                expected_sha256=failed.expected_sha256,
                activate=failed.activate,
                archive_sha256=failed.archive_sha256 if upload else "",
                requested_version=failed.requested_version,
                message=f"retry of {failed.operation_id}",
            )
        )
        kept = None
        if upload:
            kept = Spooled(Path(), failed.archive_sha256, failed.bytes_total)
            op = await self._db.repo.update_operation(
                op.operation_id, OperationChanges(bytes_done=failed.bytes_total)
            )
        return op, kept

    def _immutable(self, skill_id: str, version: str) -> AlreadyExists:
        return AlreadyExists(
            f"{skill_id} {version} is already installed with different content; "
            "versions are immutable, install a new version",
            reason="VERSION_EXISTS",
        )

    async def _claim(self, op: Operation, version: str) -> _Claim:
        """Reserve ``version`` for ``op``; raise ABORTED if a live install holds it."""
        async with self._db.transaction() as tx:
            await tx.lock_skill(op.skill_id)
            package = await tx.get_package_for_update(op.skill_id, version)
            if package is not None and package.state is PackageState.READY:
                return _Claim("ready", package)
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
                # A new live version: checked under the skill lock, in the transaction
                # that creates it, so concurrent installs cannot overshoot the quota.
                await check_version_quota(tx, op.skill_id, self._settings.max_versions_per_skill)
            await tx.claim_package(
                skill_id=op.skill_id,
                version=version,
                state=PackageState.INSTALLING,
                source_type=op.source_type or SourceType.UPLOAD,
                source_uri=op.source_uri,
                operation_id=op.operation_id,
            )
            if op.version != version:
                # A version read from the manifest: on the operation in the claim's
                # transaction, so recovery always knows which claim to release.
                await tx.update_operation(op.operation_id, OperationChanges(version=version))
        # Remembered here: should the failure be settled while the operation's row
        # does not name the version yet, the claim is still released.
        self._claims[op.operation_id] = version
        return _Claim("claimed")

    async def _receive(
        self, op: Operation, path: Path, declared: int, chunks: AsyncIterator[bytes]
    ) -> Spooled:
        spooler = Spooler(
            path, max_bytes=self._settings.limits.max_package_bytes, declared_size=declared
        )
        async with spooler:
            last = time.monotonic()
            async for chunk in chunks:
                await spooler.write(chunk)
                now = time.monotonic()
                if now - last >= PROGRESS_INTERVAL_SECONDS:
                    last = now
                    await self._db.repo.update_operation(
                        op.operation_id, OperationChanges(bytes_done=spooler.bytes_done)
                    )
            return await spooler.finish()

    # -- validation without installing --------------------------------------------------

    async def validate(self, req: InstallRequest, chunks: AsyncIterator[bytes] | None) -> Report:
        """Validate an archive exactly as an install would; nothing outlives the call.

        ``skill_id`` and ``version`` are optional here: when given, the manifest must
        agree with them; ``activate`` and ``request_id`` do not apply.
        """
        check_request(req, skill_id_required=False, what="validate request")
        # Uses staging like an upload: a shutdown waits for it before removing staging.
        this = asyncio.current_task()
        if this is not None:
            self._accepting.add(this)
        try:
            return await self._validate(req, chunks)
        finally:
            if this is not None:
                self._accepting.discard(this)

    async def _validate(self, req: InstallRequest, chunks: AsyncIterator[bytes] | None) -> Report:
        work = await asyncio.to_thread(
            self._store.new_work_dir, self.instance_id, f"validate-{uuid.uuid4().hex}"
        )
        try:
            archive = work / "archive"
            if req.source_type is SourceType.UPLOAD:
                assert chunks is not None
                spooler = Spooler(
                    archive,
                    max_bytes=self._settings.limits.max_package_bytes,
                    declared_size=req.declared_size,
                )
                async with spooler:
                    async for chunk in chunks:
                        await spooler.write(chunk)
                    spooled = await spooler.finish()
            else:
                spooled = await fetch_url(
                    req.url,
                    archive,
                    max_bytes=self._settings.limits.max_package_bytes,
                    policy=self._settings.url_policy,
                )
            async with self._slots:
                with _store_errors("extract the package"):
                    report = await _blocking(
                        functools.partial(
                            validate_archive,
                            spooled.path,
                            work / "tree",
                            self._settings.limits,
                            sha256=spooled.sha256,
                            expected_name=req.skill_id or None,
                            expected_version=req.version or None,
                        )
                    )
            if req.sha256 and req.sha256 != spooled.sha256:
                mismatch = Violation(
                    Code.CHECKSUM_MISMATCH,
                    "",
                    f"the archive's SHA-256 is {spooled.sha256}, not the expected {req.sha256}",
                    Severity.ERROR,
                )
                report = dataclasses.replace(report, violations=(mismatch, *report.violations))
            return report
        finally:
            await asyncio.shield(asyncio.to_thread(self._store.make_writable_and_remove, work))

    # -- the background part ------------------------------------------------------------

    async def _stage(self, op: Operation, stage: Stage, message: str, **changes: Any) -> Operation:
        enter_stage(stage, message)
        return await self._db.repo.update_operation(
            op.operation_id,
            OperationChanges(state=OperationState.RUNNING, stage=stage, message=message, **changes),
        )

    async def _run(self, job: _Job) -> None:
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
            await _uncancellable(
                self._fail(job.op, exc, job.work, started=job.started, spooled=job.spooled)
            )
            if not isinstance(exc, Exception):
                raise
        finally:
            if waiting:
                INSTALLS_QUEUED.dec()
            self._dismiss()
            self._claims.pop(job.op.operation_id, None)

    async def _pipeline(self, job: _Job) -> None:
        op, req, work, spooled, started = job.op, job.req, job.work, job.spooled, job.started
        if spooled is None:
            spooled = await self._download(op, req, work / "archive")
        op = await self._stage(op, Stage.VERIFYING, "verifying the archive digest")
        if req.sha256 and req.sha256 != spooled.sha256:
            raise InvalidArgument(
                f"the archive's SHA-256 is {spooled.sha256}, not the expected {req.sha256}",
                reason="CHECKSUM_MISMATCH",
            )
        if req.version and not job.claimed:
            await self._reinstall(op, req.version, spooled, work, started=started)
            return
        op = await self._stage(op, Stage.EXTRACTING, "extracting the archive")
        with _store_errors("extract the package"):
            report = await _blocking(
                functools.partial(
                    validate_archive,
                    spooled.path,
                    work / "tree",
                    self._settings.limits,
                    sha256=spooled.sha256,
                    expected_name=req.skill_id,
                    expected_version=req.version or None,
                )
            )
        op = await self._stage(op, Stage.VALIDATING, "validating the package")
        if not report.valid:
            raise _ValidationFailed(report)
        assert report.manifest is not None
        # The request's version, else the manifest's (validate_archive resolved it),
        # else one the service assigns (SPEC §4).
        version = req.version or report.manifest.version
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
            claim = await self._claim(op, version)
            if claim.kind == "ready":
                await self._reinstall(op, version, spooled, work, started=started)
                return
        op = await self._stage(op, Stage.COMMITTING, "committing to the store", version=version)
        # Files move and the READY row commits together or not at all: a shutdown's
        # cancellation waits for the commit to end (an interrupted one would leave
        # an orphan blob or directory behind the cleanup).
        await _uncancellable(self._commit(op, version, spooled, report, job))
        # Counted, not measured: walking the store after every install made each one
        # cost more than the last. The heartbeat re-measures now and then.
        STORAGE_BYTES.inc(report.unpacked_bytes + spooled.size_bytes)
        if req.activate:
            await self._activate(op, version, started)

    async def _commit(
        self, op: Operation, version: str, spooled: Spooled, report: Report, job: _Job
    ) -> None:
        req, work, started = job.req, job.work, job.started
        files = [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "executable": f.executable}
            for f in report.files
        ]
        manifest = report_details(report)["validation_report"]["manifest"]
        manifest["version"] = version  # an assigned version is the package's too
        async with self._db.transaction() as tx:
            await tx.lock_skill(op.skill_id)
            # Held until READY commits, so a deletion cannot drop an archive this
            # install found in the store and reused.
            await tx.lock_blob(spooled.sha256)
            final = await asyncio.to_thread(
                self._store.commit_package,
                work / "tree",
                spooled.path,
                req.skill_id,
                version,
                spooled.sha256,
            )
            # Tree and archive were moved out; only the empty work directory is left.
            await asyncio.to_thread(self._store.make_writable_and_remove, work)
            ok = await tx.mark_package_ready(
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
            )
            if not ok:
                raise Aborted("the version was taken over by another install", reason="CLAIM_LOST")
            if not req.activate:
                await self._finish(tx, op, "installed (not activated)", started)

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
        await self._stage(
            op, Stage.VERIFYING, "identical to the installed version", version=version
        )
        if op.activate:
            await self._activate(op, version, started)
        else:
            async with self._db.transaction() as tx:
                await self._finish(tx, op, "already installed", started)

    async def _activate(self, op: Operation, version: str, started: float) -> None:
        await self._stage(op, Stage.ACTIVATING, f"making {version} current", version=version)
        async with self._db.transaction() as tx:
            await tx.lock_skill(op.skill_id)
            await tx.set_current_version(
                op.skill_id, version, op.operation_id, OperationType.INSTALL
            )
            await self._finish(tx, op, f"{version} installed and current", started)
            # The link follows the database inside the skill lock; if the process dies
            # between the commit and the swap, start-up reconciles the link.
            await asyncio.to_thread(self._store.activate, op.skill_id, version)

    async def _finish(self, tx: Repository, op: Operation, message: str, started: float) -> None:
        await tx.update_operation(
            op.operation_id,
            OperationChanges(state=OperationState.SUCCEEDED, stage=Stage.DONE, message=message),
        )
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
        failure = _Failure(
            op=op,
            error=_error_of(exc),
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

    async def _settle(self, failure: _Failure) -> None:
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
            and await asyncio.to_thread(_is_file, archive)
        ):
            # Keep the uploaded bytes for a retry; garbage collection drops them
            # after SKILLSVC_FAILED_RETENTION.
            try:
                await asyncio.to_thread(self._store.keep_archive, archive, sha256)
            except SkillsvcError as keep_error:
                logger.warning(
                    "could not keep the bytes of %s: %s", op.operation_id, keep_error.message
                )
        kept_now = bool(sha256) and await asyncio.to_thread(_is_file, self._store.kept_path(sha256))
        if kept_now:
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
