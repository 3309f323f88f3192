"""The ``skillsvc`` command: parse arguments and settings, then call into the service.

skillsvc serve      run the gRPC service (the default configuration needs nothing);
                    with SKILLSVC_WORKERS > 1 a supervisor of worker processes
skillsvc migrate    apply pending database migrations and exit
skillsvc config     print the configuration variables as a Markdown table
skillsvc token      mint a bearer token from SKILLSVC_JWT_SECRET (development, tests)
skillsvc healthcheck  exit 0 when the running service is SERVING (container checks)
skillsvc fsck       check packages against their recorded digests (--repair)
skillsvc gc         remove what failures and crashes left (--older-than, --dry-run)
skillsvc backup DIR / restore DIR   the database and the store, together
skillsvc history SKILL / status     the install log and the service's state, no SQL
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from skillsvc import __version__, runbook
from skillsvc.auth import add_token_parser, token_command
from skillsvc.config import ConfigError, Settings, config_table
from skillsvc.errors import SkillsvcError
from skillsvc.healthcheck import add_healthcheck_parser, healthcheck_command
from skillsvc.logs import announce_serving, configure_logging

logger = logging.getLogger("skillsvc")


def _cannot_start(exc: SkillsvcError | ConfigError) -> int:
    message = exc.message if isinstance(exc, SkillsvcError) else f"configuration error: {exc}"
    print(f"skillsvc: {message}", file=sys.stderr, flush=True)
    return 2


async def _serve(settings: Settings) -> int:
    from skillsvc.tracing import configure_tracing

    # OpenTelemetry is configured by its own standard OTEL_* variables.
    provider = configure_tracing(os.environ)
    try:
        return await _serve_traced(settings)
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the spans still batched


async def _serve_traced(settings: Settings) -> int:
    from skillsvc.server import build_server, check_listen_address

    # A start-up failure (address taken, database unreachable) is one line and exit 2,
    # like a bad setting: the operator fixes the configuration, nothing to debug.
    try:
        check_listen_address(settings.listen_addr)
        if settings.metrics_addr:
            check_listen_address(settings.metrics_addr, "SKILLSVC_METRICS_ADDR")
        app = await build_server(settings)
    except (SkillsvcError, ConfigError) as exc:
        return _cannot_start(exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload_keys)  # key rotation (SPEC §7)
    try:
        await app.start()
    except SkillsvcError as exc:
        await app.stop(0)
        return _cannot_start(exc)
    announce_serving(__version__, app.address, settings.log_format)
    await stop.wait()
    logger.info("shutting down (grace %.0fs)", settings.shutdown_grace_seconds)
    await app.stop()
    return 0


async def _migrate(settings: Settings) -> int:
    from skillsvc.db import migrate, schema_version
    from skillsvc.server import open_database

    db, embedded = await open_database(settings)
    try:
        async with db.pool.acquire() as conn:
            await migrate(conn)
            version = await schema_version(conn)
        print(f"database schema at version {version}")
    finally:
        await db.close()
        if embedded is not None:
            await embedded.stop()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillsvc",
        description="Install, validate, version and roll back agent skill packages.",
    )
    parser.add_argument("--version", action="version", version=f"skillsvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the gRPC service")
    commands.add_parser("migrate", help="apply pending database migrations")
    commands.add_parser("config", help="print the configuration variables")
    runbook.add_commands(commands)
    add_token_parser(commands)
    add_healthcheck_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skillsvc`` command."""
    # skillsvc forks only to exec (pg_ctl, pg_dump, its workers). gRPC's fork handlers,
    # run in a child forked while other threads call into gRPC, can crash that child
    # before it execs (seen as pg_ctl dying with SIGSEGV/SIGBUS at shutdown). Set before
    # gRPC is first loaded, and inherited by the workers.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    args = _parser().parse_args(argv)
    if args.command == "config":
        print(config_table())
        return 0
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"skillsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        return token_command(settings, args)
    if args.command == "healthcheck":
        return healthcheck_command(settings, args)
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command in runbook.RUNNERS:
            return asyncio.run(runbook.run(settings, args))
        if args.command == "serve" and settings.workers > 1:
            from skillsvc.supervisor import supervise

            return asyncio.run(supervise(settings, os.environ))
        runner = {"serve": _serve, "migrate": _migrate}[args.command]
        return asyncio.run(runner(settings))
    except SkillsvcError as exc:
        print(f"skillsvc: {exc.message}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # a key or certificate file the server could not use
        print(f"skillsvc: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
