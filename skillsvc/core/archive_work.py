"""Where the CPU-bound archive work runs: worker processes, or threads.

Reading an archive, hashing its files and extracting them (``validate_archive``) is
pure Python for most of its time: tarfile's headers, the path rules, the manifest's
YAML. Run in a thread, it holds the GIL, and the event loop, which serves every RPC
and health check of the process, waits for it. In a py-spy profile of 50 clients
installing at once (GIL holders only), worker threads held the GIL a fifth of the
time, a third of that in ``validate_archive``.

:class:`ArchiveWork` with ``processes`` > 0 (``SKILLSVC_ARCHIVE_PROCESSES``, default
1) runs it in that many worker processes instead, so the loop keeps the GIL for
itself; the price is a pickled request and report per archive (well under a
millisecond for a small one) and about 50 MiB per process. Measured on 2 cores
(scenario 3, full runs, two interleaved pairs): 81 and 88 installs/s against 63 and
74 with threads, upload → DONE p99 1.10 and 1.07 s against 1.60 and 1.30 s. The
processes are started with ``spawn``: never ``fork`` once gRPC's C core is running
(grpc's ``examples/python/multiprocessing``). ``processes`` 0 keeps the threads.

Either way a cancelled caller waits for the work to end before it re-raises: the
work writes into the install's staging directory, which the caller removes next.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import signal
from pathlib import Path

from skillsvc.core.install_base import uncancellable
from skillsvc.validation import Limits, Report, validate_archive

logger = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 10.0
"""How long :meth:`ArchiveWork.stop` waits for the worker processes before killing them."""


def _ready() -> bool:
    """Run once in each process at start-up, so the first archive pays no spawn."""
    return True


def _ignore_signals() -> None:
    """A worker process's initializer: the serving process alone decides when it ends.

    A terminal's Ctrl-C or hang-up, or a SIGTERM sent to the whole process group,
    would otherwise kill it in the middle of an archive while its parent is still
    letting installs finish; it ends when the parent stops the pool, or when the
    parent is gone (its request pipe closes).
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


class ArchiveWork:
    """Runs ``validate_archive`` off the event loop: in ``processes`` processes, or threads.

    :meth:`start` before the first archive, :meth:`stop` after the last.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        """Worker processes; 0 runs the work in threads."""
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker processes (and wait until each has started)."""
        if self.processes <= 0 or self._pool is not None:
            return
        self._pool = concurrent.futures.ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_ignore_signals,
        )
        loop = asyncio.get_running_loop()
        # A spawned interpreter imports the validator in ~0.2 s: not on an install's time.
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ready) for _ in range(self.processes))
        )

    async def stop(self) -> None:
        """Stop the worker processes once the work given to them has ended.

        Called after the installer has stopped, so nothing is pending: no future is
        cancelled (a cancelled pending future can hang ``shutdown``, CPython issue
        94440). Processes still there after :data:`STOP_TIMEOUT_SECONDS` are killed,
        so a stuck one never holds up the exit.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(pool._processes.values()) if pool._processes else []
        try:
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await asyncio.to_thread(pool.shutdown, wait=True)
        except TimeoutError:
            logger.warning(
                "archive processes did not stop within %gs; killing them", STOP_TIMEOUT_SECONDS
            )
            for process in processes:
                process.kill()

    async def validate(
        self,
        archive: Path,
        dest: Path,
        limits: Limits,
        *,
        sha256: str,
        expected_name: str | None,
        expected_version: str | None,
    ) -> Report:
        """``validate_archive`` of ``archive`` into ``dest``, run off the event loop."""
        work = functools.partial(
            validate_archive,
            archive,
            dest,
            limits,
            sha256=sha256,
            expected_name=expected_name,
            expected_version=expected_version,
        )
        if self._pool is None:
            return await uncancellable(asyncio.to_thread(work))
        pool = self._pool
        try:
            return await uncancellable(asyncio.get_running_loop().run_in_executor(pool, work))
        except concurrent.futures.BrokenExecutor:
            # A worker process died (killed, out of memory): this archive fails, and
            # the pool is replaced for the next one (once, by the first to notice).
            if self._pool is pool:
                logger.warning("an archive worker process died; starting new ones")
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
                await self.start()
            raise
