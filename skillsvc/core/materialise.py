"""Materialisation: this node's local store of extracted packages follows the database.

Every node serves from its own ``packages/`` (SPEC §5). The database says which
version of each skill is current; :class:`Materialiser` makes the local store agree:

- a current version missing here is *materialised*: its archive is fetched from the
  blob store into this process's staging, its SHA-256 checked, extracted with the
  install's safe reader (:func:`skillsvc.validation.validate_archive`), every file
  compared with the digests recorded at install, sealed read-only and renamed into
  ``packages/<skill>/<version>/``; only then is ``current`` swapped
  (:meth:`Store.activate`), so the link never points at a half-materialised tree;
- a version whose row is gone is removed; a deleted skill's directory goes.

When it runs: for each ``skillsvc_catalog`` notification (the payload is a skill id,
sent by triggers on every definition and package change), for every skill when the
LISTEN connection comes back (notifications may have been lost), and once for every
skill at start-up (the catch-up pass, so a node that joins empty serves every current
version). A skill that fails is retried with backoff (1 s doubling to 60 s, or to
10 min when its archive was refused as damaged or missing, which does not pass by
itself) and counted; any change to the skill is tried at once whatever the backoff;
the version current before stays current meanwhile.

Races, and why they are safe:

- Every change to ``packages/<skill>/`` made here (placing a tree, swapping or removing
  the link, removing a version or the skill) happens inside a transaction holding the
  skill's advisory lock, after re-reading the database under it. Installs, rollbacks
  and deletions change the store under the same lock, so a reconcile can neither undo
  a newer change nor place a version a deletion has just removed.
- The expensive part (fetch, extract, check, flush) runs outside that lock, in private
  staging. Processes of one host that share a store (``SKILLSVC_WORKERS`` > 1, or a
  node that just installed the version itself) would each do it: a per-skill ``flock``
  on ``locks/<skill>`` lets one do it while the others wait, then find the
  tree in place and only check the link. Lock order is always the host lock, then
  the database lock; nobody holding the database lock waits for a host lock, so
  there is no deadlock. Were the host lock lost, the outcome would still be right:
  placing keeps a tree placed from the same archive (:meth:`Store.place_version`).
- A version's name says nothing about its bytes: it may be deleted and installed
  again with other bytes while this node is down, or its listener is away, or after
  ``fsck --repair`` marked it FAILED. So a tree here is trusted only if it was placed
  from the archive the database now records for the version (the mark
  :meth:`Store.placed_sha256` that installs and materialisations write beside it), or,
  when unmarked, if its files match the digests recorded at install (it is marked
  then). Any other tree of that name counts as absent: materialised again, it
  replaces the stale one under the skill's lock.
- Within one process, one task per skill runs at a time; a change heard while it
  runs makes it run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from skillsvc.blobs import CORRUPT_REASON, MISSING_REASON, BlobStore
from skillsvc.core.install_base import blocking
from skillsvc.core.models import PackageState
from skillsvc.core.naming import is_valid_skill_name
from skillsvc.db import Database, Repository, SkillSync
from skillsvc.errors import FailedPrecondition, SkillsvcError
from skillsvc.loops import Backoff, cancel_and_wait
from skillsvc.metrics import (
    MATERIALISATIONS,
    MATERIALISE_CAUGHT_UP,
    MATERIALISE_LAG,
    MATERIALISE_PENDING,
    MATERIALISE_SECONDS,
    MATERIALISED_BYTES,
)
from skillsvc.store import Store
from skillsvc.validation import Limits, validate_archive

logger = logging.getLogger(__name__)

_LOCK_POLL_SECONDS: Final = 0.02
_PROGRESS_LOG_SECONDS: Final = 5.0
_MAX_SHOWN: Final = 5


class Refused(Exception):
    """A version that cannot be materialised as recorded (not a transient failure)."""

    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result
        """``corrupt`` or ``missing`` (a ``result`` of ``skill_materialisations_total``)."""
        self.message = message


@dataclasses.dataclass(frozen=True)
class _Local:
    link: str | None
    versions: dict[str, str | None]
    """Each version directory here with the archive digest it was placed from."""
    exists: bool


def _relaxed(limits: Limits, size: int, files: Sequence[tuple[str, int, str]]) -> Limits:
    """The node's limits, raised to what this package was accepted with at install.

    A package installed under another node's (larger) limits must still materialise.
    """
    return dataclasses.replace(
        limits,
        max_package_bytes=max(limits.max_package_bytes, size),
        max_unpacked_bytes=max(limits.max_unpacked_bytes, sum(f[1] for f in files)),
        max_files=max(limits.max_files, 2 * len(files) + 16),
        max_file_bytes=max(limits.max_file_bytes, max((f[1] for f in files), default=0)),
    )


def _difference(extracted: bool, recorded: bool) -> str:
    if not extracted:
        return "missing"
    return "differs" if recorded else "unexpected"


def extract_and_check(
    archive: Path,
    dest: Path,
    sha256: str,
    files: Sequence[tuple[str, int, str]],
    limits: Limits,
) -> int:
    """Extract ``archive`` into ``dest`` and check it is exactly what was installed.

    Blocking. Raises :class:`Refused` (``corrupt``) unless the archive hashes to
    ``sha256`` and the extracted files are exactly ``files`` (path, size, SHA-256 of
    the bytes written). Returns the extracted bytes.
    """
    size = os.stat(archive).st_size
    report = validate_archive(archive, dest, _relaxed(limits, size, files))
    if report.sha256 != sha256:
        raise Refused(
            "corrupt", f"the archive's SHA-256 is {report.sha256}, not the recorded {sha256}"
        )
    extracted = {f.path: (f.size, f.sha256) for f in report.files}
    recorded = {path: (nbytes, digest.lower()) for path, nbytes, digest in files}
    if extracted != recorded:
        problems = [
            f"{path}: {_difference(path in extracted, path in recorded)}"
            for path in sorted(extracted.keys() | recorded.keys())
            if extracted.get(path) != recorded.get(path)
        ]
        shown = "; ".join(problems[:_MAX_SHOWN])
        more = len(problems) - _MAX_SHOWN
        raise Refused(
            "corrupt",
            f"its files differ from the digests recorded at install: {shown}"
            + (f" (and {more} more)" if more > 0 else ""),
        )
    return report.unpacked_bytes


@dataclasses.dataclass
class _Progress:
    """Counts a catch-up pass and logs how far it got every few seconds."""

    total: int
    last_log: float
    log: bool
    done: int = 0
    passing: int = 0

    async def track(self, attempt: Awaitable[bool]) -> None:
        if not await attempt:
            self.passing += 1
        self.done += 1
        now = time.monotonic()
        if self.log and now - self.last_log >= _PROGRESS_LOG_SECONDS:
            self.last_log = now
            logger.info("catch-up: %d/%d skills checked", self.done, self.total)


class Materialiser:
    """Keeps this node's ``packages/`` in line with the database (module docstring)."""

    def __init__(
        self,
        db: Database,
        store: Store,
        blobs: BlobStore,
        limits: Limits,
        instance_id: str,
        *,
        concurrency: int = 4,
        on_caught_up: Callable[[], Any] | None = None,
        retry_base_seconds: float = 1.0,
        retry_cap_seconds: float = 60.0,
        refused_cap_seconds: float = 600.0,
    ) -> None:
        self._db = db
        self._store = store
        self._blobs = blobs
        self.follows = blobs.shared
        """Whether changes heard on the catalog channel are followed. Only with a
        shared blob store: with local blobs every process that can change the
        database shares this store and changes it itself (and following would cost a
        query per change in every process)."""
        self._limits = limits
        self._instance_id = instance_id
        self._slots = asyncio.Semaphore(concurrency)
        self.on_caught_up = on_caught_up
        """Called once, when the start-up catch-up pass completes."""
        self._retry_base = retry_base_seconds
        self._retry_cap = retry_cap_seconds
        # A refusal (archive damaged or missing) does not pass by itself: retrying it
        # every minute re-downloads the archive on every node forever. A change to the
        # skill (its notification) is tried at once whatever the backoff says.
        self._refused_cap = refused_cap_seconds
        self._dirty: set[str] = set()
        self._catching: set[str] = set()  # a catch-up pass has yet to check these
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failing: dict[str, Backoff] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.caught_up = False
        """True once the start-up catch-up pass has tried every skill and nothing it
        tried failed for a passing reason (an unreachable blob store)."""

    # -- following changes -----------------------------------------------------------

    def dispatch(self, skill_id: str) -> None:
        """A catalog notification: bring ``skill_id`` in line soon (never blocks)."""
        if self._stopping or not self.follows or not is_valid_skill_name(skill_id):
            return
        self._dirty.add(skill_id)
        if skill_id not in self._tasks:
            self._tasks[skill_id] = asyncio.create_task(
                self._follow(skill_id), name=f"materialise-{skill_id}"
            )
        self._publish_pending()

    def resync(self) -> None:
        """The LISTEN connection is back: changes may have been missed, check every skill."""
        if self.follows and not self._stopping:
            self._spawn(self._catch_up(first=False), "materialise-resync")

    async def _follow(self, skill_id: str) -> None:
        try:
            while skill_id in self._dirty and not self._stopping:
                self._dirty.discard(skill_id)
                await self._attempt(skill_id, observe_lag=True)
        finally:
            del self._tasks[skill_id]
            self._publish_pending()

    async def _attempt(self, skill_id: str, *, observe_lag: bool) -> bool:
        """Reconcile one skill; on failure log, count, schedule a retry.

        Returns False when it failed for a passing reason (worth retrying soon).
        """
        try:
            async with self._slots:
                await self.reconcile(skill_id, observe_lag=observe_lag)
        except asyncio.CancelledError:
            raise
        except Refused as exc:
            self._failed(skill_id, exc.message, permanent=True)
            return True
        except Exception as exc:
            message = exc.message if isinstance(exc, SkillsvcError) else repr(exc)
            self._failed(skill_id, message, permanent=False, exc=exc)
            return False
        if self._failing.pop(skill_id, None) is not None:
            logger.info("materialisation: %s is in sync again", skill_id)
        return True

    def _failed(
        self, skill_id: str, message: str, *, permanent: bool, exc: Exception | None = None
    ) -> None:
        backoff = self._failing.setdefault(
            skill_id, Backoff(base=self._retry_base, cap=self._retry_cap)
        )
        backoff.cap = self._refused_cap if permanent else self._retry_cap
        delay = backoff.next_delay()
        if backoff.failures == 1:
            level = logging.ERROR if permanent else logging.WARNING
            unexpected = exc is not None and not isinstance(exc, SkillsvcError)
            logger.log(
                level,
                "materialisation of %s failed (the previous version stays current; "
                "retrying with backoff): %s",
                skill_id,
                message,
                exc_info=exc if unexpected else None,
            )
        else:
            logger.debug("materialisation of %s failed again: %s", skill_id, message)
        if not self._stopping:
            old = self._retries.pop(skill_id, None)
            if old is not None:
                old.cancel()
            self._retries[skill_id] = asyncio.get_running_loop().call_later(
                delay, self._retry, skill_id
            )

    def next_retry(self, skill_id: str) -> float | None:
        """Seconds until ``skill_id``'s next retry, None when none is scheduled."""
        handle = self._retries.get(skill_id)
        if handle is None:
            return None
        return max(handle.when() - asyncio.get_running_loop().time(), 0.0)

    def _retry(self, skill_id: str) -> None:
        self._retries.pop(skill_id, None)
        self.dispatch(skill_id)

    def _publish_pending(self) -> None:
        pending = self._dirty | self._catching | set(self._tasks) | set(self._failing)
        MATERIALISE_PENDING.set(len(pending))

    def _spawn(self, work: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- start-up and catch-up -------------------------------------------------------

    async def start(self) -> None:
        """Fix at once what needs no fetch, then catch up on the rest in the background.

        Links that disagree with the database but whose version is here are swapped
        before this returns (as start-up always did); versions to fetch and skills to
        remove are left to the background pass, during which :attr:`caught_up` is
        False (health stays NOT_SERVING) unless nothing was missing.
        """
        MATERIALISE_CAUGHT_UP.set(0)
        currents = [
            c for c in await self._db.repo.list_current_versions() if is_valid_skill_name(c[0])
        ]
        on_disk = await asyncio.to_thread(self._store.versions_on_disk)
        links, marks = await asyncio.to_thread(self._links_and_marks, currents)
        behind = 0
        for skill_id, version, sha256 in currents:
            # A tree is this version only if it came from this version's archive: the
            # version may have been deleted and installed again while we were down.
            here = version is None or (sha256 and marks[skill_id] == sha256)
            if here and links[skill_id] == version:
                continue
            if here:
                await self.reconcile(skill_id, fetch=False)
            else:
                behind += 1  # the catch-up pass fetches it (or checks an unmarked tree)
        known = {skill_id for skill_id, _, _ in currents}
        behind += sum(1 for skill_id in on_disk if skill_id not in known)
        if not behind:
            self._set_caught_up(0, 0.0)
        else:
            logger.info("catch-up: %d skill(s) to materialise or remove", behind)
        self._spawn(self._catch_up(first=True), "materialise-catch-up")

    def _links_and_marks(
        self, currents: Sequence[tuple[str, str | None, str]]
    ) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """Each skill's link and the mark of its current version's tree (blocking)."""
        links = {s: self._store.current_version(s) for s, _, _ in currents}
        marks = {
            s: self._store.placed_sha256(s, v) if v is not None else None for s, v, _ in currents
        }
        return links, marks

    async def _catch_up(self, *, first: bool) -> None:
        """Reconcile every skill in the database or on disk, until a pass has no
        passing failure (permanent ones are left to their own retries)."""
        backoff = Backoff(base=self._retry_base, cap=self._retry_cap)
        while not self._stopping:
            started = time.monotonic()
            try:
                currents = await self._db.repo.list_current_versions()
                on_disk = await asyncio.to_thread(self._store.versions_on_disk)
            except SkillsvcError as exc:
                delay = backoff.next_delay()
                logger.warning("catch-up: cannot list skills (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            skills = sorted(
                s for s in {c[0] for c in currents} | set(on_disk) if is_valid_skill_name(s)
            )
            progress = _Progress(total=len(skills), last_log=started, log=first)
            self._catching.update(skills)
            self._publish_pending()
            await asyncio.gather(*(progress.track(self._checked(s, first=first)) for s in skills))
            passing = progress.passing
            if not passing:
                if first or not self.caught_up:
                    self._set_caught_up(len(skills), time.monotonic() - started)
                return
            delay = backoff.next_delay()
            logger.warning(
                "catch-up: %d of %d skill(s) could not be materialised yet; next pass in %.1fs",
                passing,
                len(skills),
                delay,
            )
            await asyncio.sleep(delay)

    async def _checked(self, skill_id: str, *, first: bool) -> bool:
        try:
            return await self._attempt(skill_id, observe_lag=not first)
        finally:
            self._catching.discard(skill_id)
            self._publish_pending()

    def _set_caught_up(self, skills: int, seconds: float) -> None:
        already = self.caught_up
        self.caught_up = True
        MATERIALISE_CAUGHT_UP.set(1)
        if already:
            return
        failing = len(self._failing)
        logger.info(
            "catch-up complete: %d skill(s) checked in %.2fs%s",
            skills,
            seconds,
            f"; {failing} refused, retried in the background" if failing else "",
        )
        if self.on_caught_up is not None:
            self.on_caught_up()

    async def stop(self) -> None:
        """Stop following changes; wait for work in progress to end (threads included)."""
        self._stopping = True
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        await cancel_and_wait([*self._tasks.values(), *self._background])

    # -- one skill ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _host_lock(self, skill_id: str) -> AsyncIterator[None]:
        """The store's host lock of ``skill_id``: one materialiser per skill per host.

        Polled rather than waited for in a thread, so a cancelled task never leaves a
        thread blocked in ``flock`` holding the file open.
        """
        with await asyncio.to_thread(self._store.host_lock, skill_id) as lock:
            while True:
                if lock.try_acquire():
                    break
                await asyncio.sleep(_LOCK_POLL_SECONDS)
            yield

    @contextlib.asynccontextmanager
    async def _db_locked(self, skill_id: str) -> AsyncIterator[Repository]:
        async with self._db.transaction() as tx:
            await tx.lock_skill(skill_id)
            yield tx

    def _local(self, skill_id: str) -> _Local:
        placed = self._store.placed(skill_id)
        if placed is None:
            return _Local(None, {}, exists=False)
        return _Local(self._store.current_version(skill_id), placed, exists=True)

    async def _trusted(self, skill_id: str, version: str, sha256: str, mark: str | None) -> bool:
        """Whether the tree of ``version`` here holds the files of archive ``sha256``.

        Its mark says so, or, for an unmarked tree (placed by an older release, by
        ``fsck --repair``, or put back after a crash), its files match the digests
        recorded at install: then it is marked, under the skill's lock, so that is
        checked once. A tree from another archive is never trusted.
        """
        if not sha256 or mark is not None:
            return bool(sha256) and mark == sha256
        files = [
            (str(f["path"]), int(f["size"]), str(f["sha256"]))
            for f in await self._db.repo.package_files(skill_id, version)
        ]
        problems = await asyncio.to_thread(self._store.verify_tree, skill_id, version, files)
        if not files or problems:
            return False
        async with self._db_locked(skill_id) as tx:
            package = await tx.get_package(skill_id, version, None)
            if package is None or package.sha256 != sha256:
                return False
            await asyncio.to_thread(self._store.mark_placed, skill_id, version, sha256)
        logger.info("%s %s: its unmarked files match the install's record", skill_id, version)
        return True

    async def reconcile(
        self, skill_id: str, *, fetch: bool = True, observe_lag: bool = False
    ) -> None:
        """Bring the local copy of one skill in line with the database.

        With ``fetch=False`` nothing is downloaded: a current version that is not here
        is left as it is. Raises :class:`Refused` when the current version's archive
        or files do not match what was recorded, domain errors when the blob store,
        the database or the disk fail.
        """
        async with self._host_lock(skill_id):
            state = await self._db.repo.skill_sync_state(skill_id)
            read_at = time.monotonic()
            local = await asyncio.to_thread(self._local, skill_id)
            if state is None:
                if local.exists:
                    await self._remove_skill(skill_id)
                return
            target = state.current_version
            here = target is None or (
                target in local.versions
                and await self._trusted(skill_id, target, state.sha256, local.versions[target])
            )
            if target != local.link or not here:
                if target is not None and not here:
                    if not fetch:
                        return
                    # Replaces a tree of the same name from another archive.
                    await self._materialise(skill_id, target, state)
                switched = await self._switch(skill_id, target)
                if switched and observe_lag and state.change_age_seconds is not None:
                    lag = state.change_age_seconds + time.monotonic() - read_at
                    MATERIALISE_LAG.observe(max(lag, 0.0))
            for version in sorted(local.versions.keys() - state.versions):
                await self._remove_version(skill_id, version)

    async def ensure_local(self, skill_id: str, version: str) -> None:
        """Materialise one READY version unless it is here already (before a rollback).

        Raises ``FailedPrecondition`` (``INTEGRITY_CHECK_FAILED``) when its archive or
        files do not match the digests recorded at install.
        """
        package = await self._db.repo.get_package(skill_id, version, None)
        if package is None or package.state is not PackageState.READY:
            return  # the caller reports it
        if await self._present(skill_id, version, package.sha256):
            return
        async with self._host_lock(skill_id):
            if await self._present(skill_id, version, package.sha256):
                return
            state = SkillSync(
                current_version=None,
                sha256=package.sha256,
                size_bytes=package.size_bytes,
                unpacked_bytes=package.unpacked_bytes,
                file_count=package.file_count,
                change_age_seconds=None,
                versions=frozenset({version}),
            )
            try:
                await self._materialise(skill_id, version, state)
            except Refused as exc:
                raise FailedPrecondition(
                    f"{skill_id} {version} failed its integrity check: {exc.message}",
                    reason="INTEGRITY_CHECK_FAILED",
                ) from exc

    async def _present(self, skill_id: str, version: str, sha256: str) -> bool:
        """Whether ``version``'s tree here came from archive ``sha256`` (see _trusted)."""
        placed = await asyncio.to_thread(self._store.placed, skill_id)
        if placed is None or version not in placed:
            return False
        return await self._trusted(skill_id, version, sha256, placed[version])

    async def _materialise(self, skill_id: str, version: str, state: SkillSync) -> None:
        """Fetch, check, extract, verify and place ``version`` (not yet current)."""
        started = time.monotonic()
        if not state.sha256:
            raise Refused("missing", f"{skill_id} {version} is current but not READY")
        files = [
            (str(f["path"]), int(f["size"]), str(f["sha256"]))
            for f in await self._db.repo.package_files(skill_id, version)
        ]
        work = await asyncio.to_thread(
            self._store.new_work_dir, self._instance_id, f"materialise-{uuid.uuid4().hex}"
        )
        try:
            try:
                # Never more than the recorded size is read: the bucket is not trusted.
                await self._blobs.fetch(
                    "archive",
                    state.sha256,
                    work / "archive",
                    expected_size=state.size_bytes or None,
                )
                unpacked = await blocking(
                    extract_and_check,
                    work / "archive",
                    work / "tree",
                    state.sha256,
                    files,
                    self._limits,
                )
                # The slow flush before the lock, as installs do; under it, a rename.
                await blocking(self._store.seal_package, work / "tree")
            except SkillsvcError as exc:
                if exc.reason == CORRUPT_REASON:
                    raise Refused("corrupt", exc.message) from exc
                if exc.reason == MISSING_REASON:
                    raise Refused("missing", exc.message) from exc
                raise
            async with self._db_locked(skill_id) as tx:
                package = await tx.get_package(skill_id, version, None)
                if (
                    package is None
                    or package.state is not PackageState.READY
                    or package.sha256 != state.sha256
                ):
                    return  # changed meanwhile: its notification brings us back
                placed = await asyncio.to_thread(
                    self._store.place_version, work / "tree", skill_id, version, state.sha256
                )
        except Refused as exc:
            MATERIALISATIONS.labels(exc.result).inc()
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            MATERIALISATIONS.labels("failed").inc()
            raise
        finally:
            await blocking(self._store.make_writable_and_remove, work)
        if placed:
            seconds = time.monotonic() - started
            MATERIALISATIONS.labels("success").inc()
            MATERIALISED_BYTES.inc(unpacked)
            MATERIALISE_SECONDS.observe(seconds)
            logger.info(
                "materialised %s %s (%d bytes) in %.3fs", skill_id, version, unpacked, seconds
            )

    async def _switch(self, skill_id: str, target: str | None) -> bool:
        """Point ``current`` at the database's current version, re-read under the lock."""
        async with self._db_locked(skill_id) as tx:
            fresh = await tx.skill_sync_state(skill_id)
            if fresh is None or fresh.current_version != target:
                return False  # changed meanwhile: its notification brings us back
            if await asyncio.to_thread(self._store.current_version, skill_id) == target:
                return False
            if target is None:
                await asyncio.to_thread(self._store.deactivate, skill_id)
                logger.info("%s has no current version any more", skill_id)
            else:
                await asyncio.to_thread(self._store.activate, skill_id, target)
                logger.info("%s/current now points at %s", skill_id, target)
        return True

    async def _remove_version(self, skill_id: str, version: str) -> None:
        async with self._db_locked(skill_id) as tx:
            if await tx.get_package(skill_id, version, None) is not None:
                return
            if await asyncio.to_thread(self._store.current_version, skill_id) == version:
                return  # the link goes first (its own reconcile)
            await asyncio.to_thread(self._store.remove_version, skill_id, version)
        logger.info("removed %s %s (deleted)", skill_id, version)

    async def _remove_skill(self, skill_id: str) -> None:
        async with self._db_locked(skill_id) as tx:
            if await tx.get_definition(skill_id, None) is not None:
                return
            await asyncio.to_thread(self._store.remove_skill, skill_id)
        logger.info("removed skill %s (deleted)", skill_id)


def fan_out(*handlers: Callable[[str], None]) -> Callable[[str], None]:
    """One listener handler calling each of ``handlers`` in order."""

    def dispatch(payload: str) -> None:
        for handler in handlers:
            handler(payload)

    return dispatch


__all__ = [
    "Materialiser",
    "Refused",
    "extract_and_check",
    "fan_out",
]
