"""The install pipeline: accept, receive, verify, extract, validate, commit, activate.

An install is accepted by :meth:`Installer.install` (the spec is checked, the
operation recorded, the upload spooled with its SHA-256 computed on the way in) and
then runs in the background, at most ``max_concurrent`` at a time:

    RECEIVING → QUEUED → [DOWNLOADING] → EXTRACTING → COMMITTING → DONE
                                                    (any stage) → FAILED

A stage row is written only when it tells a watcher something: the digest is
computed while the bytes arrive (no VERIFYING row), extraction and validation are one
step (EXTRACTING), and READY, current and DONE commit in one transaction (no
ACTIVATING row). An identical reinstall goes from QUEUED straight to DONE.

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
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from skillsvc.core.acceptance import Acceptance
from skillsvc.core.install_base import STORAGE_RECOUNT_BEATS
from skillsvc.core.install_requests import (
    MAX_REQUEST_ID,
    InstallerSettings,
    InstallRequest,
    check_request,
)
from skillsvc.core.reports import report_details
from skillsvc.core.validate_only import validate_only
from skillsvc.errors import (
    SkillsvcError,
)
from skillsvc.loops import Backoff, run_forever
from skillsvc.validation import Report

__all__ = [
    "MAX_REQUEST_ID",
    "InstallRequest",
    "Installer",
    "InstallerSettings",
    "check_request",
    "report_details",
]

logger = logging.getLogger(__name__)


class Installer(Acceptance):
    """Runs installs for this process and recovers after others.

    Its parts, one module each: admission and shared state (``install_base``),
    liveness and recovery (``recovery``), the background pipeline (``pipeline``),
    acceptance (``acceptance``), validate-only (``validate_only``).
    """

    async def start(self) -> None:
        """Register this process, recover after dead ones, start the heartbeat."""
        await self._db.repo.register_instance(self.instance_id, self._hostname, os.getpid())
        await asyncio.to_thread(self._store.instance_staging, self.instance_id)
        await asyncio.to_thread(self._store.purge_trash)
        await self.recover()
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
            return await validate_only(
                req,
                chunks,
                store=self._store,
                instance_id=self.instance_id,
                slots=self._slots,
                settings=self._settings,
                archives=self._archives,
            )
        finally:
            if this is not None:
                self._accepting.discard(this)
