"""LISTEN on a PostgreSQL channel over a dedicated connection that reconnects itself.

Progress events travel through ``NOTIFY`` so that a watcher connected to any replica
sees changes made by any other. While the connection is down, notifications are
lost; the listener tells its owner when it is back (``on_reconnect``) so watchers can
re-read what they may have missed from the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)


class Listener:
    """Delivers each notification payload on ``channel`` to ``on_message``."""

    def __init__(
        self,
        url: str,
        channel: str,
        on_message: Callable[[str], None],
        on_reconnect: Callable[[], None],
        *,
        retry_seconds: float = 0.5,
    ) -> None:
        self._url = url
        self._channel = channel
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._retry_seconds = retry_seconds
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _deliver(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_message(payload)

    def _terminated(self, _conn: Any) -> None:
        self._lost.set()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url)
        conn.add_termination_listener(self._terminated)
        await conn.add_listener(self._channel, self._deliver)
        self._conn = conn

    async def start(self) -> None:
        """Connect and start listening; keeps reconnecting in the background."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name=f"listen-{self._channel}")

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            logger.warning("LISTEN connection lost; reconnecting")
            while True:
                try:
                    await self._connect()
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    logger.debug("reconnect failed: %s", exc)
                    await asyncio.sleep(self._retry_seconds)
            self._on_reconnect()

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.wait_for(self._conn.close(), 5)
