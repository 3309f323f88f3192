"""Accepting an install or a retry: admission, the operation's row, the version's claim,
receiving the bytes, and handing the job to the pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from skillsvc.blobs import UNAVAILABLE_REASON, Kind
from skillsvc.core.install_base import PROGRESS_INTERVAL_SECONDS, Job, uncancellable
from skillsvc.core.install_requests import InstallRequest, check_request
from skillsvc.core.models import (
    Caller,
    Operation,
    OperationState,
    OperationType,
    SourceType,
    Stage,
)
from skillsvc.core.pipeline import Pipeline
from skillsvc.core.progress import parse_operation_id
from skillsvc.core.stagetrace import begin_install, enter_stage
from skillsvc.db import NewOperation, OperationChanges
from skillsvc.errors import (
    Cancelled,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from skillsvc.intake import Spooled, Spooler
from skillsvc.metrics import INSTALLS_QUEUED

# One logger for every part of the installer, as when it was one module.
logger = logging.getLogger("skillsvc.core.installs")

BLOB_PROBE_SECONDS = 5.0
"""How long an install waits for the blob store to answer again after its last probe
failed, before it is refused (the server's probe allows the same)."""


class Acceptance(Pipeline):
    """Accepts installs and retries and starts them in the background."""

    async def install(
        self, caller: Caller, req: InstallRequest, chunks: AsyncIterator[bytes] | None
    ) -> Operation:
        """Accept an install, receive its bytes (uploads), and start it in the background."""
        check_request(req)
        assert req.source_type is not None  # check_request
        upload = req.source_type is SourceType.UPLOAD
        await self._check_blob_store(caller, req)
        try:
            self._admit()  # before a byte of the upload is read
        except ResourceExhausted:
            await self._check_can_install(caller, req)  # who may act comes first
            raise
        try:
            op, created = await self._insert_install(caller, req, upload)
        except BaseException:
            self._dismiss()
            raise
        if not created:
            self._dismiss()
            return op  # the same request_id was seen before: answer with that operation
        return await self._begin(op, req, chunks=chunks)

    async def _check_blob_store(self, caller: Caller, req: InstallRequest) -> None:
        """Refuse an install up front (``UNAVAILABLE``, ``BLOB_STORE_UNAVAILABLE``)
        while the blob store's last probe failed and a probe now fails too.

        Only a fast path, so an upload is not received whole for an archive that
        cannot be stored: when the last probe is stale the other way (the store went
        down since), the install fails as before, when it stores the archive.
        """
        if not self._blobs.down:
            return
        try:
            # It may be back: then this install goes ahead.
            async with asyncio.timeout(BLOB_PROBE_SECONDS):
                await self._blobs.probe()
        except (Unavailable, TimeoutError) as exc:
            await self._check_can_install(caller, req)  # who may act comes first
            detail = exc.message if isinstance(exc, Unavailable) else "its probe timed out"
            raise Unavailable(
                f"installs are refused while the blob store does not answer: {detail}",
                reason=UNAVAILABLE_REASON,
            ) from exc

    async def _check_can_install(self, caller: Caller, req: InstallRequest) -> None:
        """NOT_FOUND or PERMISSION_DENIED unless ``caller`` may install into the skill."""
        definition = await self._definitions.get(caller, req.skill_id, fresh=True)
        self._definitions.check_can_manage(caller, definition.tenant)

    async def _insert_install(
        self, caller: Caller, req: InstallRequest, upload: bool
    ) -> tuple[Operation, bool]:
        """The operation's row, checking first that ``caller`` may install.

        Admins and publishers, the callers who may manage a definition, have the
        definition's owner checked in the table by the statement that inserts the row
        (never in the read cache: see ``Definitions.get``); when it inserts nothing,
        the usual lookup says why (or a request_id was seen before).
        """
        new = self._new_install(caller, req, upload)
        if caller.is_admin or "publisher" in caller.roles:
            tenant = None if caller.is_admin else caller.tenant
            op = await self._db.repo.insert_managed_operation(new, tenant)
            if op is not None:
                return op, True
        await self._check_can_install(caller, req)
        return await self._db.repo.insert_operation(new)

    def _new_install(self, caller: Caller, req: InstallRequest, upload: bool) -> NewOperation:
        return NewOperation(
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
            await uncancellable(self._fail(op, exc, None, started=started))
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
                if not await self._fetch_kept(kept.sha256, kept.size_bytes, archive):
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
            await uncancellable(self._fail(op, cause, work, started=started, spooled=spooled))
            raise
        except BaseException as exc:
            await uncancellable(self._fail(op, exc, work, started=started, spooled=spooled))
            raise
        INSTALLS_QUEUED.inc()
        task = asyncio.create_task(
            self._run(Job(op, req, work, spooled, claimed=claimed, started=started)),
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
        definition = await self._definitions.get(caller, failed.skill_id, fresh=True)
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
                # In the insert, not a second statement: a failure between the two left a
                # PENDING operation that nothing would ever run or settle.
                bytes_done=failed.bytes_total if upload else 0,
            )
        )
        kept = Spooled(Path(), failed.archive_sha256, failed.bytes_total) if upload else None
        return op, kept

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

    async def _fetch_kept(self, sha256: str, size: int, dest: Path) -> bool:
        """Fetch a retry's bytes (kept, or an installed package's archive) to ``dest``,
        checked against their digest and ``size``; False when neither is stored any more."""
        kinds: tuple[Kind, ...] = ("kept", "archive")  # kept: what a failed upload left
        for kind in kinds:
            try:
                await self._blobs.fetch(kind, sha256, dest, expected_size=size)
            except NotFound:
                continue
            return True
        return False
