"""WatchSkills through the Python library (both flavours) and ``skillctl watch-skills``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading

import asyncpg
import grpc
import pytest

from skillsvc.config import Settings
from skillsvc.server import App, build_server
from skillsvc.v1 import skill_service_pb2_grpc
from skillsvc_client import AsyncClient, Client, Connection, OutOfRange, RetryPolicy
from skillsvc_client.v1 import resources_pb2
from tests.clients.conftest import skillctl, skillctl_env
from tests.install.conftest import create_skill
from tests.processes import free_port

SYNCED = resources_pb2.SKILL_EVENT_TYPE_SYNCED
CREATED = resources_pb2.SKILL_EVENT_TYPE_DEFINITION_CREATED


async def test_the_blocking_client_streams_changes(app: App) -> None:
    seen: list[resources_pb2.SkillEvent] = []
    synced = threading.Event()

    def follow() -> None:
        with Client(Connection(app.address)) as client:
            for event in client.watch_skills():
                seen.append(event)
                if event.type == SYNCED:
                    synced.set()
                if len(seen) == 3:
                    return  # leaving the loop cancels the call

    reader = asyncio.create_task(asyncio.to_thread(follow))
    async with asyncio.timeout(20):
        while not synced.is_set():
            await asyncio.sleep(0.02)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "one")
        await create_skill(stub, "two")
    async with asyncio.timeout(20):
        await reader
    assert [(e.type, e.skill_id) for e in seen] == [
        (SYNCED, ""),
        (CREATED, "one"),
        (CREATED, "two"),
    ]


async def test_the_async_client_resumes_across_a_server_restart_without_loss_or_repeat(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # Two servers, one after the other, on one address and one database: the client
    # sees UNAVAILABLE (SHUTTING_DOWN) and reconnects with the last seq it received.
    address = f"127.0.0.1:{free_port()}"
    fixed = dataclasses.replace(settings, listen_addr=address)
    first: App | None = await build_server(fixed)
    await first.start()
    second: App | None = None
    seen: list[resources_pb2.SkillEvent] = []
    try:
        async with AsyncClient(
            Connection(address, retry=RetryPolicy(attempts=20, max_backoff=0.5))
        ) as client:

            async def follow() -> None:
                async for event in client.watch_skills():
                    seen.append(event)
                    if len([e for e in seen if e.type != SYNCED]) == 3:
                        return

            reader = asyncio.create_task(follow())
            async with asyncio.timeout(20):
                while not seen:
                    await asyncio.sleep(0.02)
            await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('a', true)")
            async with asyncio.timeout(20):
                while len(seen) < 2:
                    await asyncio.sleep(0.02)
            await first.stop(5)
            first = None
            # Made while no server runs: the resumed stream replays it.
            await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('b', true)")
            second = await build_server(fixed)
            await second.start()
            await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('c', true)")
            async with asyncio.timeout(30):
                await reader
    finally:
        for app in (first, second):
            if app is not None:
                await app.stop(0)
    changes = [e for e in seen if e.type != SYNCED]
    assert [e.skill_id for e in changes] == ["a", "b", "c"]
    assert [e.seq for e in changes] == [changes[0].seq, changes[0].seq + 1, changes[0].seq + 2]
    assert seen[0].type == SYNCED


async def test_a_since_the_server_does_not_keep_is_out_of_range(app: App) -> None:
    async with AsyncClient(Connection(app.address)) as client:
        with pytest.raises(OutOfRange) as info:
            async for _ in client.watch_skills(since=1000):
                pass
    assert info.value.reason == "SINCE_UNKNOWN"


async def test_skillctl_watch_skills_prints_each_change(app: App) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "first")
        human = asyncio.create_task(
            skillctl(app.address, "watch-skills", "--since", "0", "--count", "2")
        )
        as_json = asyncio.create_task(
            skillctl(
                app.address, "watch-skills", "second", "--since", "0", "--count", "1", "--json"
            )
        )
        await create_skill(stub, "second")
        human_run, json_run = await human, await as_json
    assert human_run.code == 0, human_run.err
    lines = human_run.out.splitlines()
    assert "1 DEFINITION_CREATED first" in lines
    assert "2 DEFINITION_CREATED second" in lines
    assert json_run.code == 0, json_run.err
    # One JSON object per line: the replay of "second" only (filtered), then SYNCED
    # (whichever came first depends on when the process subscribed).
    docs = [json.loads(line) for line in json_run.out.splitlines()]
    created = [d for d in docs if d["type"] == "SKILL_EVENT_TYPE_DEFINITION_CREATED"]
    assert [(d["seq"], d["skillId"]) for d in created] == [("2", "second")]


async def test_skillctl_watch_skills_prints_changes_as_they_happen(app: App) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skillsvc_client.cli",
        "watch-skills",
        "--count",
        "1",
        env=skillctl_env(SKILLSVC_ADDR=app.address),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            # Each line is flushed as it comes: SYNCED before any change exists.
            assert (await proc.stdout.readline()).decode() == (
                "0 SYNCED (following changes from here)\n"
            )
            async with grpc.aio.insecure_channel(app.address) as channel:
                await create_skill(skill_service_pb2_grpc.SkillServiceStub(channel), "live")
            assert (await proc.stdout.readline()).decode() == "1 DEFINITION_CREATED live\n"
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_skillctl_watch_skills_reports_a_lost_history(app: App) -> None:
    result = await skillctl(app.address, "watch-skills", "--since", "99", "--json")
    assert result.code == 1
    assert "OUT_OF_RANGE" in result.err
    error = json.loads(result.out)["error"]
    assert (error["code"], error["reason"]) == ("OUT_OF_RANGE", "SINCE_UNKNOWN")


async def test_the_async_client_resumes_from_a_position_marker_after_pruning(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # The client watches a quiet skill while others change: the server's position
    # markers (SYNCED) carry its position past them. The history up to there is then
    # pruned and the server restarts: the client resumes from the marker, not from the
    # first SYNCED (which would be OUT_OF_RANGE), and misses nothing.
    address = f"127.0.0.1:{free_port()}"
    fixed = dataclasses.replace(settings, listen_addr=address, watch_retention_seconds=2.0)
    first: App | None = await build_server(fixed)
    await first.start()
    second: App | None = None
    seen: list[resources_pb2.SkillEvent] = []
    try:
        async with AsyncClient(
            Connection(address, retry=RetryPolicy(attempts=20, max_backoff=0.5))
        ) as client:

            async def follow() -> None:
                async for event in client.watch_skills(["quiet"]):
                    seen.append(event)
                    if event.type == CREATED:
                        return

            reader = asyncio.create_task(follow())
            async with asyncio.timeout(20):
                while not seen:
                    await asyncio.sleep(0.02)
            for name in ("busy-1", "busy-2"):
                await db.execute(
                    "INSERT INTO skill_definitions (skill_id, public) VALUES ($1, true)", name
                )
            head = seen[0].seq + 2
            async with asyncio.timeout(20):
                while seen[-1].seq != head:
                    await asyncio.sleep(0.02)
            await first.stop(5)
            first = None
            await db.execute("DELETE FROM skill_events")  # pruned up to the head
            second = await build_server(fixed)
            await second.start()
            await db.execute(
                "INSERT INTO skill_definitions (skill_id, public) VALUES ('quiet', true)"
            )
            async with asyncio.timeout(30):
                await reader
    finally:
        for app in (first, second):
            if app is not None:
                await app.stop(0)
    assert {e.type for e in seen[:-1]} == {SYNCED}
    assert (seen[-1].skill_id, seen[-1].seq) == ("quiet", head + 1)
