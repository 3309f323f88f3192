"""LISTEN on PostgreSQL channels over one dedicated connection that reconnects itself.

Progress events and catalog changes travel through ``NOTIFY`` so that a process
connected to any replica sees changes made by any other. While the connection is down,
notifications are lost; the listener says so at once (``on_lost``) and again when it is
back (``on_reconnect``), so watchers can re-read what they may have missed from the
table and caches can drop what they hold. One connection carries every channel, so
notifications arrive in commit order across channels too. Reconnection attempts back off
exponentially with jitter (0.5 s up to 5 s); the loss is logged at WARNING, the
recovery at INFO, and no error ends the supervising task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import asyncpg

from skillsvc.db._driver import SERVER_SETTINGS
from skillsvc.loops import Backoff

logger = logging.getLogger(__name__)

CATALOG_CHANNEL: Final = "skillsvc_catalog"
"""The NOTIFY channel of definition and package changes; the payload is the skill id.

Sent by the triggers of ``migrations/0004_catalog_notify.sql`` in the writing transaction.
"""


class Listener:
    """Delivers each notification payload on a channel to that channel's handler."""

    def __init__(
        self,
        url: str,
        handlers: Mapping[str, Callable[[str], None]],
        on_reconnect: Callable[[], None],
        *,
        on_lost: Callable[[], None] | None = None,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 5.0,
    ) -> None:
        self._url = url
        self._handlers = dict(handlers)
        self._channel = ", ".join(self._handlers)
        self._on_reconnect = on_reconnect
        self._on_lost = on_lost
        self._backoff = Backoff(base=retry_seconds, cap=max_retry_seconds)
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0
        """How many times the connection was lost and restored."""

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is up (nothing is being missed)."""
        return self._conn is not None and not self._lost.is_set() and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend of the LISTEN connection (for operators and tests)."""
        return None if self._conn is None else self._conn.get_server_pid()

    def _deliver(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._handlers[channel](payload)

    def _terminated(self, conn: Any) -> None:
        # Only the connection in use counts: one dropped during a failed reconnect
        # attempt (or replaced since) must not start yet another reconnect.
        if conn is not self._conn:
            return
        self._lost.set()
        if self._on_lost is not None:
            try:
                self._on_lost()
            except Exception:
                logger.warning(
                    "reacting to the loss of the LISTEN connection failed", exc_info=True
                )

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url, timeout=10, server_settings=SERVER_SETTINGS)
        try:
            for channel in self._handlers:
                await conn.add_listener(channel, self._deliver)
        except BaseException:
            conn.terminate()
            raise
        old, self._conn = self._conn, conn
        # Registered once the connection is the one in use (see _terminated).
        conn.add_termination_listener(self._terminated)
        if old is not None and not old.is_closed():
            old.terminate()

    async def start(self) -> None:
        """Connect and start listening; keeps reconnecting in the background."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name=f"listen-{self._channel}")

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            logger.warning("LISTEN connection on %r lost; reconnecting with backoff", self._channel)
            while True:
                try:
                    await self._connect()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Anything (refused, a server still starting, a driver error)
                    # only delays the next attempt; the loop never ends on it.
                    delay = self._backoff.next_delay()
                    logger.debug("reconnect failed (%s); next attempt in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
            logger.info(
                "LISTEN connection on %r restored after %d failed attempt(s); resynchronising",
                self._channel,
                self._backoff.failures,
            )
            self._backoff.reset()
            self.reconnects += 1
            try:
                self._on_reconnect()
            except Exception:
                logger.warning("resynchronising after a reconnect failed", exc_info=True)

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.wait_for(self._conn.close(), 5)
