"""Helpers of the WatchSkills tests: follow a stream in the background, wait for events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

Stub = skill_service_pb2_grpc.SkillServiceStub
E = resources_pb2.SkillEvent
T = resources_pb2.SkillEventType

WAIT_SECONDS = 20.0
"""Longest a test waits for an event it expects."""


def brief(event: resources_pb2.SkillEvent) -> tuple[str, str, str, str, str]:
    """(type without prefix, skill, version, from, to): what tests compare."""
    name = T.Name(event.type).removeprefix("SKILL_EVENT_TYPE_")
    return (name, event.skill_id, event.version, event.from_version, event.to_version)


class Watch:
    """A WatchSkills call read by a background task into a list."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.events: list[resources_pb2.SkillEvent] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.call:
                self.events.append(event)
                self._changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        finally:
            self._changed.set()

    @property
    def changes(self) -> list[resources_pb2.SkillEvent]:
        """Every event but SYNCED."""
        return [e for e in self.events if e.type != T.SKILL_EVENT_TYPE_SYNCED]

    @property
    def ended(self) -> bool:
        return self._task.done()

    async def until(self, done: Callable[[Watch], bool], timeout: float = WAIT_SECONDS) -> None:
        """Wait until ``done(self)`` holds (or the stream ends)."""
        async with asyncio.timeout(timeout):
            while not done(self):
                if self.ended:
                    raise AssertionError(f"the stream ended: {self.error!r}")
                self._changed.clear()
                await self._changed.wait()

    async def synced(self) -> int:
        """Wait for SYNCED; its seq."""
        await self.until(lambda w: any(e.type == T.SKILL_EVENT_TYPE_SYNCED for e in w.events))
        return next(e.seq for e in self.events if e.type == T.SKILL_EVENT_TYPE_SYNCED)

    async def count(self, n: int) -> list[resources_pb2.SkillEvent]:
        """Wait for ``n`` changes (SYNCED not counted); all changes so far."""
        await self.until(lambda w: len(w.changes) >= n)
        return self.changes

    async def ending(self, timeout: float = WAIT_SECONDS) -> grpc.aio.AioRpcError | None:
        """Wait for the stream to end; its error."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._task)
        return self.error

    async def cancel(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def watching(
    stub: Stub,
    *,
    skill_ids: tuple[str, ...] = (),
    since: int | None = None,
    metadata: Any = None,
) -> AsyncIterator[Watch]:
    """A WatchSkills stream followed in the background, cancelled on exit."""
    request = skill_service_pb2.WatchSkillsRequest(skill_ids=list(skill_ids))
    if since is not None:
        request.since = since
    watch = Watch(stub.WatchSkills(request, metadata=metadata))
    try:
        yield watch
    finally:
        await watch.cancel()
