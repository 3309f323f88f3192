"""The benchmark client: one grpc.aio process driving installs, reads and health checks.

Every helper uses the generated stubs. Times are ``time.perf_counter`` intervals, except
progress events, whose receive time is ``time.time`` so it can be compared with the
event's ``time`` (PostgreSQL's ``clock_timestamp()``, the same machine clock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

pb = skill_service_pb2
Stub = skill_service_pb2_grpc.SkillServiceStub
DONE = resources_pb2.INSTALL_STAGE_DONE
FAILED = resources_pb2.INSTALL_STAGE_FAILED

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
]


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


@dataclass
class InstallResult:
    """One install as the client saw it."""

    ok: bool
    """The last event was DONE."""
    seconds: float
    """Install call started → terminal event received."""
    accepted: float = 0.0
    """Install call started → Install returned (every byte sent)."""
    operation_id: str = ""
    error: str = ""
    events: list[tuple[resources_pb2.InstallEvent, float]] = field(default_factory=list)
    """Each event with its ``time.time()`` of arrival (kept only when asked)."""
    started_wall: float = 0.0
    """``time.time()`` when the Install call started."""


async def create_skill(stub: Stub, skill_id: str) -> None:
    try:
        await stub.CreateSkillDefinition(
            pb.CreateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(
                    skill_id=skill_id, description="benchmark skill"
                )
            )
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


async def _messages(skill_id: str, chunks: Sequence[bytes]) -> AsyncIterator[pb.InstallRequest]:
    size = sum(len(c) for c in chunks)
    yield pb.InstallRequest(
        spec=pb.InstallSpec(skill_id=skill_id, upload=pb.UploadSource(size_bytes=size))
    )
    for chunk in chunks:
        yield pb.InstallRequest(chunk=chunk)


async def start_install(stub: Stub, skill_id: str, chunks: Sequence[bytes]) -> str:
    """Upload a package; returns the operation id once every byte is in."""
    op = await stub.Install(_messages(skill_id, chunks))
    return str(op.operation_id)


async def watch(stub: Stub, operation_id: str) -> list[tuple[resources_pb2.InstallEvent, float]]:
    """Every InstallProgress event with its arrival time (``time.time()``)."""
    call = stub.InstallProgress(pb.InstallProgressRequest(operation_id=operation_id))
    seen = []
    async for event in call:
        seen.append((event, time.time()))
    return seen


async def install(
    stub: Stub, skill_id: str, chunks: Sequence[bytes], *, keep_events: bool = False
) -> InstallResult:
    """Upload, then follow InstallProgress until the terminal event."""
    started_wall = time.time()
    start = time.perf_counter()
    try:
        operation_id = await start_install(stub, skill_id, chunks)
        accepted = time.perf_counter() - start
        events = await watch(stub, operation_id)
    except grpc.aio.AioRpcError as exc:
        return InstallResult(
            False, time.perf_counter() - start, error=f"{exc.code().name}: {exc.details()}"
        )
    seconds = time.perf_counter() - start
    last = events[-1][0] if events else None
    ok = last is not None and last.stage == DONE
    error = "" if ok else (last.message if last is not None else "no events")
    return InstallResult(
        ok, seconds, accepted, operation_id, error, events if keep_events else [], started_wall
    )


async def health_probe(address: str, stop: asyncio.Event, interval: float = 0.02) -> list[float]:
    """Health ``Check`` latencies, one call every ``interval`` s, until ``stop`` is set."""
    latencies: list[float] = []
    async with channel(address) as chan:
        check = health_pb2_grpc.HealthStub(chan).Check
        request = health_pb2.HealthCheckRequest(service="")
        await check(request, timeout=10)  # connect outside the measurement
        while not stop.is_set():
            t0 = time.perf_counter()
            await check(request, timeout=10)
            latencies.append(time.perf_counter() - t0)
            with_timeout = asyncio.create_task(stop.wait())
            await asyncio.wait({with_timeout}, timeout=interval)
            with_timeout.cancel()
    return latencies


async def health_for(address: str, seconds: float, interval: float = 0.02) -> list[float]:
    """Health ``Check`` latencies over ``seconds`` of otherwise idle time."""
    stop = asyncio.Event()
    task = asyncio.create_task(health_probe(address, stop, interval))
    await asyncio.sleep(seconds)
    stop.set()
    return await task


@dataclass
class Load:
    """The outcome of a closed-loop load with a fixed number of calls in flight."""

    calls: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def qps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


async def closed_loop(
    call: Callable[[Any], Awaitable[Any]], request: Any, in_flight: int, seconds: float
) -> Load:
    """``in_flight`` workers calling ``call(request)`` back to back for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                await call(request)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    return Load(len(latencies), errors, elapsed, latencies)
