"""One worker process of ``skillsvc serve``'s supervisor (``python -m skillsvc.worker``).

:mod:`skillsvc.supervisor` starts each worker as a fresh interpreter, never as a fork:
gRPC's C core cannot be carried across ``fork`` once it has started (grpc's
``examples/python/multiprocessing``), so no gRPC object exists in a worker before its
own :func:`~skillsvc.server.build_server`. Everything a worker needs comes through its
environment: the supervisor's database URL, the concrete listen address (the port the
supervisor reserved), no metrics endpoint of its own and ``PROMETHEUS_MULTIPROC_DIR``
(so its metrics land where the supervisor's endpoint reads them).

A worker is the single-process service with two differences: it binds with
``SO_REUSEPORT`` beside its siblings and skips migrations (the supervisor ran them).
It has its own pool, LISTEN connection, health service and heartbeat (an instance of
its own, so the others' recovery reaps its operations if it dies), and on SIGTERM or
SIGINT it stops exactly like ``skillsvc serve`` with one worker: health NOT_SERVING,
new calls refused, a grace period for running calls and installs, exit 0; on SIGHUP
it re-reads its JWT keys like it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence

from skillsvc.config import ConfigError, Settings
from skillsvc.errors import SkillsvcError

logger = logging.getLogger("skillsvc.worker")

_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM to this worker if the supervisor dies (even by -9).

    Without it a killed supervisor would leave workers serving on the port with
    nobody to stop them or report their address.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        raise SystemExit(1)


async def run(settings: Settings, ready_fd: int, index: int = 0) -> int:
    """Build and start this worker's server, report ready, serve until a signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed before anything starts, so a signal during start-up still stops cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The supervisor passes SIGHUP on; until the server exists there is nothing to
    # reload, but its default action would kill the worker.
    loop.add_signal_handler(signal.SIGHUP, logger.info, "SIGHUP: not serving yet")
    # Imported only now: OpenTelemetry's import takes a noticeable moment, during which
    # a SIGTERM from the supervisor would otherwise kill the worker outright.
    from skillsvc.logs import configure_logging
    from skillsvc.server import build_server
    from skillsvc.tracing import configure_tracing

    configure_logging(settings.log_level, settings.log_format, worker=index)
    provider = configure_tracing(os.environ)
    try:
        app = await build_server(settings, run_migrations=False, reuse_port=True)
        loop.add_signal_handler(signal.SIGHUP, app.reload_keys)  # key rotation (SPEC §7)
        await app.start()
        os.write(ready_fd, f"{app.port}\n".encode())
        os.close(ready_fd)
        await stop.wait()
        logger.info("shutting down (grace %.0fs)", settings.shutdown_grace_seconds)
        await app.stop()
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the spans still batched
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a worker; the supervisor passes these arguments."""
    parser = argparse.ArgumentParser(prog="python -m skillsvc.worker")
    parser.add_argument("--index", type=int, required=True, help="worker number, for logs")
    parser.add_argument("--ready-fd", type=int, required=True, help="pipe to report ready on")
    parser.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    args = parser.parse_args(argv)
    _die_with(args.parent)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"skillsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    # A worker that cannot start (a key file, the address, the database) says why in
    # one line and exits 2 like `skillsvc serve`; the supervisor passes the code on
    # when its first worker cannot start.
    try:
        return asyncio.run(run(settings, args.ready_fd, args.index))
    except SkillsvcError as exc:
        print(f"skillsvc: {exc.message}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"skillsvc: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
