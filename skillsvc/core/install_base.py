"""What the installer's parts share: its state, admission, and running blocking work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from skillsvc.blobs import BlobStore, LocalBlobs
from skillsvc.core.definitions import Definitions
from skillsvc.core.install_requests import InstallerSettings, InstallRequest
from skillsvc.core.models import (
    Operation,
    OperationError,
    OperationState,
    Package,
)
from skillsvc.db import Database
from skillsvc.errors import (
    AlreadyExists,
    ResourceExhausted,
)
from skillsvc.intake import Spooled
from skillsvc.store import Store, store_error

if TYPE_CHECKING:
    from skillsvc.core.archive_work import ArchiveWork

# One logger for every part of the installer, as when it was one module.
logger = logging.getLogger("skillsvc.core.installs")


# The store's size is measured from disk every this many heartbeats (a full walk), and
# counted up by installs in between.
STORAGE_RECOUNT_BEATS: Final = 60
# Byte progress is written to the database (and so notified) at most this often.
PROGRESS_INTERVAL_SECONDS: Final = 0.25


@dataclass
class Claim:
    """The outcome of reserving a version for an operation."""

    kind: str
    """``claimed``, ``ready`` (same version installed) or ``busy``."""
    package: Package | None = None
    """The existing package for ``ready``/``busy``."""
    staged: bool = False
    """``claimed``: the claim's transaction also wrote the COMMITTING stage."""


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """The store's error for an ``OSError`` of its filesystem (a full disk, …)."""
    try:
        yield
    except OSError as exc:
        raise store_error(exc, action) from exc


@dataclass(frozen=True)
class Failure:
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


def is_file(path: Path) -> bool:
    """``path.is_file()``, as a function to run in a thread."""
    return path.is_file()


async def blocking(func: Callable[..., T], *args: Any) -> T:
    """Run ``func`` in a thread; if cancelled, let the thread end before re-raising.

    A thread cannot be stopped: were the caller to clean up at once, it would race
    with the thread still writing (a staging directory removed under an extraction
    fails with "Directory not empty", a commit finishing after its cleanup leaves an
    orphan blob).
    """
    return await uncancellable(asyncio.to_thread(func, *args))


async def uncancellable(work: Awaitable[T]) -> T:
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
class Job:
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


class InstallerBase:
    """The state an installer's parts share: this process's id, its admitted installs,
    its tasks, the failures not recorded yet and the versions it has claimed."""

    def __init__(
        self,
        db: Database,
        store: Store,
        definitions: Definitions,
        settings: InstallerSettings,
        *,
        archives: ArchiveWork,
        instance_id: str | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self._db = db
        # Where archives are read and extracted (worker processes or threads).
        self._archives = archives
        self._store = store
        # Original archives and kept upload bytes: local blobs/ unless a bucket is set.
        self._blobs: BlobStore = blobs if blobs is not None else LocalBlobs(store.root)
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
        self._unsettled: dict[str, Failure] = {}
        # Versions claimed by operations, for a failure the database has not seen.
        self._claims: dict[str, str] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self._beats = 0
        self._hostname = socket.gethostname()

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

    def _immutable(self, skill_id: str, version: str) -> AlreadyExists:
        return AlreadyExists(
            f"{skill_id} {version} is already installed with different content; "
            "versions are immutable, install a new version",
            reason="VERSION_EXISTS",
        )
