"""A lean install: few SQL statements, and stages that tell a watcher something.

Statements are counted by ``skillsvc_db_statements_total`` (a query logger on every
pooled connection, BEGIN and COMMIT included). The server's periodic work (heartbeat,
health probe) is pushed out of the way, and the test waits for the install through
its own connection, so the difference is the install's alone: the Install RPC
(the operation's row, which checks the definition's owner, and its claim) and the
background part.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2_grpc
from tests.install.conftest import create_skill, events, install
from tests.packages import skill_archive

Stub = skill_service_pb2_grpc.SkillServiceStub
S = resources_pb2

# Issue 12 aims at 10 and 12; measured before this change: 24 and 25. Reached so far
# (no VERIFYING, VALIDATING or ACTIVATING rows, READY + current + DONE in one transaction, both
# locks in one statement, a claim reads its row and the quota count at once, READY,
# current and DONE in one statement, a version from the manifest claimed in the
# transaction that writes COMMITTING, a new version claimed by one statement, the
# definition's owner checked by the operation's insert, the lock and the claim of a new
# version in one function call that also names it on the operation, migrations/0008):
# 9 with a version (the request's or the manifest's) and 12 without. The bound keeps
# what was won.
MAX_WITH_VERSION = 9
MAX_WITHOUT_VERSION = 12


@pytest.fixture
async def quiet_stub(make_app: Any) -> AsyncIterator[Stub]:
    """A server whose heartbeat and health probe stay quiet during a test."""
    app: App = await make_app(heartbeat_seconds=3600, health_interval_seconds=3600)
    async with grpc.aio.insecure_channel(app.address) as channel:
        yield skill_service_pb2_grpc.SkillServiceStub(channel)


def _statements() -> float:
    value = REGISTRY.get_sample_value("skillsvc_db_statements_total")
    assert value is not None
    return value


async def _counted_install(stub: Stub, db: asyncpg.Connection, data: bytes, **fields: Any) -> int:
    """Statements of one install, from the RPC to its terminal state."""
    await asyncio.sleep(0.05)  # counts logged on the loop's next turns
    before = _statements()
    op = await install(stub, "lean", data, **fields)
    async with asyncio.timeout(60):
        while await db.fetchval(
            "SELECT state FROM skill_install_logs WHERE operation_id = $1::uuid", op.operation_id
        ) not in ("SUCCEEDED", "FAILED"):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    state = await db.fetchval(
        "SELECT state FROM skill_install_logs WHERE operation_id = $1::uuid", op.operation_id
    )
    assert state == "SUCCEEDED"
    return int(_statements() - before)


async def test_a_small_install_takes_few_statements(
    quiet_stub: Stub, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_skill(quiet_stub, "lean")
    # Warm-up: every pooled connection has seen its statements once.
    await _counted_install(quiet_stub, db, skill_archive("lean", "0.0.1"), version="0.0.1")
    with_version = await _counted_install(
        quiet_stub, db, skill_archive("lean", "1.0.0"), version="1.0.0"
    )
    # No version in the request: the manifest's, claimed in the background.
    from_manifest = await _counted_install(quiet_stub, db, skill_archive("lean", "1.1.0"))
    # No version at all: the service assigns the next one.
    assigned = await _counted_install(quiet_stub, db, skill_archive("lean", None))
    with capsys.disabled():
        print(
            f"\nstatements per small upload install: {with_version} with a version in the "
            f"request, {from_manifest} with one in the manifest, {assigned} without"
        )
    assert with_version <= MAX_WITH_VERSION
    assert from_manifest <= MAX_WITH_VERSION
    assert assigned <= MAX_WITHOUT_VERSION


async def test_stages_never_go_backwards(quiet_stub: Stub) -> None:
    await create_skill(quiet_stub, "lean")
    data = skill_archive("lean", "1.0.0")
    order = [
        S.INSTALL_STAGE_QUEUED,
        S.INSTALL_STAGE_RECEIVING,
        S.INSTALL_STAGE_DOWNLOADING,
        S.INSTALL_STAGE_VERIFYING,
        S.INSTALL_STAGE_EXTRACTING,
        S.INSTALL_STAGE_VALIDATING,
        S.INSTALL_STAGE_COMMITTING,
        S.INSTALL_STAGE_ACTIVATING,
        S.INSTALL_STAGE_DONE,
    ]
    for attempt in range(2):  # the second is an identical reinstall
        # No version in the request: found in the manifest after extraction.
        op = await install(quiet_stub, "lean", data)
        seen = [e.stage for e in await events(quiet_stub, op.operation_id)]
        assert seen[-1] == S.INSTALL_STAGE_DONE, (attempt, seen)
        ranks = [order.index(s) for s in seen if s != S.INSTALL_STAGE_QUEUED]
        assert ranks == sorted(ranks), (attempt, seen)
