"""``skillsvc serve`` with several workers: a small supervisor process (SPEC §6).

The service is CPU-bound in one event loop, so one process uses one core. With
``SKILLSVC_WORKERS`` above 1, ``serve`` runs this supervisor instead of the service:

1. it reserves the listen address: a ``SO_REUSEPORT`` socket bound (not listening)
   for as long as it runs, so every worker binds the same port, also when the
   configured port is 0 (the kernel picks one, reported as the serving address);
2. starts the embedded PostgreSQL when ``SKILLSVC_DATABASE_URL`` is unset, and
   migrates once;
3. starts the workers, ``python -m skillsvc.worker`` (:mod:`skillsvc.worker`) as fresh
   interpreters, never forks: the first alone (it recovers after dead instances and
   reconciles the store), then the rest together. Each builds its own gRPC server,
   pool and LISTEN connection and binds with ``SO_REUSEPORT``, so the kernel spreads
   incoming connections over them;
4. serves one Prometheus endpoint on ``SKILLSVC_METRICS_ADDR`` for all of them:
   workers write their values into a private ``PROMETHEUS_MULTIPROC_DIR`` and the
   endpoint's :class:`~prometheus_client.multiprocess.MultiProcessCollector` adds
   them up;
5. restarts a worker that dies, after an exponential backoff that resets once a
   worker has run for a while (a crashing worker must not spin); the dead worker's
   operations are reaped by its siblings' recovery (each worker is an instance with
   its own heartbeat) and its live gauges are dropped from the endpoint;
6. passes SIGTERM and SIGINT on to every worker, each of which stops exactly like a
   single-process ``serve`` (health NOT_SERVING, grace period, exit), and exits 0
   once all have exited 0 (1 otherwise), after stopping the embedded PostgreSQL;
   SIGHUP is passed on too, and changes nothing in the supervisor.

The supervisor imports no gRPC (workers are fresh interpreters anyway, not forks) and
holds no database connection while serving. It reads the key and certificate files
once before starting anything, so a bad one stops ``serve`` with exit code 2 as in a
single process (workers read them again as they build their servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillsvc import __version__
from skillsvc.config import ConfigError, Settings
from skillsvc.errors import SkillsvcError
from skillsvc.logs import announce_serving

logger = logging.getLogger("skillsvc.supervisor")

INITIAL_BACKOFF_SECONDS = 0.5
"""Delay before restarting a worker that died after running steadily."""
MAX_BACKOFF_SECONDS = 30.0
"""Cap of the doubling delay for a worker that keeps dying."""
STEADY_SECONDS = 60.0
"""A worker that ran this long before dying restarts after the initial delay again."""
KILL_MARGIN_SECONDS = 30.0
"""After a stop signal, workers still running this long past the grace period are killed."""


_LISTEN_VAR = "SKILLSVC_LISTEN_ADDR"


class CannotListen(OSError):
    """The listen address cannot be bound (in use, not local, no permission)."""


def reserve_address(listen_addr: str) -> tuple[socket.socket, str]:
    """Bind a ``SO_REUSEPORT`` socket on ``listen_addr``; return it and ``host:port``.

    The socket never listens, so it takes no connections; kept bound, it holds the
    port (the one the kernel chose for port 0) for the workers, which bind beside it
    with the same option, like grpc's ``examples/python/multiprocessing``. A port that
    another program (another ``serve`` included) already listens on is refused first:
    with ``SO_REUSEPORT`` alone the kernel would let both share it.
    """
    host, _, port_text = listen_addr.rpartition(":")
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host.strip("[]") or None, int(port_text), type=socket.SOCK_STREAM
        )[0]
    except OSError as exc:
        raise CannotListen(f"cannot listen on {listen_addr} ({_LISTEN_VAR}): {exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        if sockaddr[1] != 0:
            # SO_REUSEADDR like gRPC's own sockets: only a live socket conflicts, not
            # connections of an earlier run still in TIME_WAIT.
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise CannotListen(
            f"cannot listen on {listen_addr} ({_LISTEN_VAR}): {exc.strerror or exc}"
        ) from exc
    return sock, f"{host}:{sock.getsockname()[1]}"


@dataclass
class _Slot:
    """One worker position: its current process and its restart history."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    delay: float = INITIAL_BACKOFF_SECONDS
    restarts: int = 0
    serving: bool = False
    """Whether ``proc`` has reported that it serves (and so handles SIGHUP)."""
    reload_pending: bool = False
    """A SIGHUP came while ``proc`` was starting: pass it on once it serves."""


class Supervisor:
    """Runs ``settings.workers`` workers until a stop signal (see the module docstring)."""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self._settings = settings
        self._environ = dict(environ)
        self._stopping = False
        self._stop = asyncio.Event()
        self._signal = signal.SIGTERM
        self._slots = [_Slot(i) for i in range(settings.workers)]
        self._metrics_dir: Path | None = None
        self._worker_env: dict[str, str] = {}

    @property
    def pids(self) -> list[int]:
        """The pids of the workers running now."""
        return [s.proc.pid for s in self._slots if s.proc and s.proc.returncode is None]

    def _on_signal(self, signum: int) -> None:
        if not self._stopping:
            logger.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.pids))
        self._stopping = True
        self._signal = signal.Signals(signum)
        self._stop.set()
        # A repeated signal is passed on again; workers treat it as the same request.
        self._forward()

    def _forward(self, signum: int | None = None) -> None:
        for slot in self._slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(self._signal if signum is None else signum)

    def _on_reload(self) -> None:
        # SIGHUP means "re-read what can be re-read" (SPEC §7's keys): the workers' job.
        # A worker still starting may not handle SIGHUP yet (its default action kills),
        # and may have read the key files before they changed: it gets the signal as
        # soon as it reports serving.
        logger.info("SIGHUP: passing it on to %d workers", len(self.pids))
        for slot in self._slots:
            if slot.proc is None or slot.proc.returncode is not None:
                continue
            if slot.serving:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGHUP)
            else:
                slot.reload_pending = True

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the process's exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        try:
            # The key and certificate files are read here first, so a bad one is one
            # line and exit 2 before any worker starts (each worker reads them again).
            _check_security_files(self._settings)
        except ConfigError as exc:
            print(f"skillsvc: configuration error: {exc}", file=sys.stderr)
            return 2
        try:
            reservation, address = reserve_address(self._settings.listen_addr)
        except CannotListen as exc:
            print(f"skillsvc: {exc}", file=sys.stderr)
            return 2
        embedded: Any = None
        metrics_server: Any = None
        try:
            # Fresh and private (mkdtemp: mode 0700), so no other run's files are added in.
            self._metrics_dir = Path(tempfile.mkdtemp(prefix="skillsvc-metrics-"))
            if self._settings.metrics_addr:
                try:
                    metrics_server = _serve_metrics(self._settings.metrics_addr, self._metrics_dir)
                except OSError as exc:
                    print(
                        f"skillsvc: cannot listen on {self._settings.metrics_addr} "
                        f"(SKILLSVC_METRICS_ADDR): {exc.strerror or exc}",
                        file=sys.stderr,
                    )
                    return 2
            url = self._settings.database_url
            try:
                if url is None:
                    from skillsvc.db import EmbeddedPostgres

                    embedded = await EmbeddedPostgres.start(self._settings.data_dir / "postgres")
                    url = embedded.url
                await _migrate(url)
            except SkillsvcError as exc:
                # A database that cannot start, be reached or be used: one line and
                # exit 2, like a bad setting (a URL is shown without its password).
                print(f"skillsvc: {exc.message}", file=sys.stderr)
                return 2
            self._worker_env = {
                **self._environ,
                "SKILLSVC_DATABASE_URL": url,
                "SKILLSVC_LISTEN_ADDR": address,
                "SKILLSVC_METRICS_ADDR": "",
                "SKILLSVC_WORKERS": "1",
                "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir),
            }
            return await self._supervise(address)
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
            if embedded is not None:
                await embedded.stop()
            reservation.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _supervise(self, address: str) -> int:
        loop = asyncio.get_running_loop()
        first, *rest = self._slots
        tasks: dict[int, asyncio.Task[int]] = {}
        failed = False
        # The first worker alone: its start-up recovery and store reconciliation then
        # run once instead of racing their twins.
        for group in ([first], rest):
            if self._stopping:
                break
            started: list[asyncio.Future[bool]] = []
            for slot in group:
                future: asyncio.Future[bool] = loop.create_future()
                started.append(future)
                tasks[slot.index] = asyncio.create_task(
                    self._keep_running(slot, future), name=f"worker-{slot.index}"
                )
            if not all(await asyncio.gather(*started)):
                failed = True
                break
        if failed and not self._stopping:
            logger.error("a worker failed to start; stopping the others")
            self._stopping = True
            self._stop.set()
            self._forward()
        elif not self._stopping:
            announce_serving(__version__, address, self._settings.log_format)
            logger.info(
                "%d workers (pids %s) serving on %s",
                len(self._slots),
                ", ".join(map(str, self.pids)),
                address,
            )
        await self._stop.wait()
        if not tasks:
            # Stopped before any worker started (a signal while PostgreSQL started or
            # the migrations ran): nothing to wait for, a clean stop.
            logger.info("skillsvc stopped before any worker started")
            return 0
        limit = self._settings.shutdown_grace_seconds + KILL_MARGIN_SECONDS
        _, pending = await asyncio.wait(tasks.values(), timeout=limit)
        if pending:
            logger.error("workers still running %.0fs after the signal: killing them", limit)
            for slot in self._slots:
                if slot.proc is not None and slot.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        slot.proc.kill()
            await asyncio.wait(pending)
        codes = [task.result() for task in tasks.values()]
        logger.info("skillsvc stopped (workers exited with %s)", codes)
        if failed:
            # A worker that could not start says why with its code (2: bad settings).
            return next((code for code in codes if code > 0), 1)
        return 0 if all(code == 0 for code in codes) and not pending else 1

    async def _keep_running(self, slot: _Slot, started: asyncio.Future[bool]) -> int:
        """Run the worker of ``slot``, restarting it until the supervisor stops.

        ``started`` gets whether its first process came up serving. Returns the exit
        code of its last process (0 if it was waiting to restart when the stop came:
        nothing of it was running to exit uncleanly).
        """
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                began = loop.time()
                proc: asyncio.subprocess.Process | None = None
                ready = False
                try:
                    proc, ready = await self._start_worker(slot)
                except Exception:
                    # Logged and retried like a crash: the supervisor must outlive it.
                    logger.exception("worker %d could not be started", slot.index)
                if not started.done():
                    started.set_result(ready)
                    if not ready:
                        return 1 if proc is None else await proc.wait()
                code = 1
                if proc is not None:
                    code = await proc.wait()
                    self._forget(slot, proc)
                    if self._stopping:
                        return code
                    if loop.time() - began >= STEADY_SECONDS:
                        slot.delay = INITIAL_BACKOFF_SECONDS
                    logger.error(
                        "worker %d (pid %d) %s; restarting it in %.1fs (restart %d)",
                        slot.index,
                        proc.pid,
                        _describe_exit(code),
                        slot.delay,
                        slot.restarts + 1,
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(slot.delay):
                        await self._stop.wait()
                slot.delay = min(slot.delay * 2, MAX_BACKOFF_SECONDS)
                slot.restarts += 1
            return 0
        finally:
            if not started.done():
                started.set_result(False)

    async def _start_worker(self, slot: _Slot) -> tuple[asyncio.subprocess.Process, bool]:
        """Start one worker; wait until it serves (True) or exits first (False)."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "skillsvc.worker",
                "--index",
                str(slot.index),
                "--ready-fd",
                str(write_fd),
                "--parent",
                str(os.getpid()),
                env=self._worker_env,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        slot.proc, slot.serving, slot.reload_pending = proc, False, False
        if self._stopping:  # the signal came while it was being started
            self._forward()
        try:
            # The worker writes its port once it serves; EOF means it exited first.
            reply = await asyncio.to_thread(os.read, read_fd, 64)
        finally:
            os.close(read_fd)
        if reply:
            logger.info("worker %d (pid %d) serving", slot.index, proc.pid)
            slot.serving = True
            if slot.reload_pending:
                slot.reload_pending = False
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)
        else:
            logger.error("worker %d (pid %d) exited before serving", slot.index, proc.pid)
        return proc, bool(reply)

    def _forget(self, slot: _Slot, proc: asyncio.subprocess.Process) -> None:
        """Drop a dead worker's live gauges from the shared metrics."""
        if self._metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(proc.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
        if slot.proc is proc:
            slot.proc = None


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _check_security_files(settings: Settings) -> None:
    """Read the key and certificate files once, before anything starts.

    Each worker reads them again as it builds its server; this makes a bad file stop
    ``serve`` at once, with the ConfigError (exit code 2) of a single process, instead
    of after PostgreSQL and a worker have started.
    """
    from skillsvc.auth import build_authenticator
    from skillsvc.tls import load_server_tls

    build_authenticator(settings)
    load_server_tls(settings)


async def _migrate(url: str) -> None:
    """Apply pending migrations once, before any worker starts."""
    from skillsvc.db import connect

    db = await connect(url, pool_size=1)
    await db.close()


def _serve_metrics(addr: str, metrics_dir: Path) -> Any:
    """Serve every worker's metrics, summed, on ``addr`` (a thread of this process)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    host, _, port = addr.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    return server


async def supervise(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run ``serve`` as a supervisor of ``settings.workers`` workers."""
    return await Supervisor(settings, environ).run()
