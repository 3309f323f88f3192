"""The read cache never shows one tenant's private skill to another.

Entries are cached as an admin sees them; every read applies the visibility rule to
the cached row. Each refusal here is answered from the cache (its hit counter moves),
so it is the cached path that is checked, not the SQL one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc

from skillsvc.db import CATALOG_CHANNEL
from skillsvc.v1 import resources_pb2, skill_service_pb2
from tests.auth.conftest import ADMIN, OTHER_READER, PUBLISHER, READER, VERSION, Metadata, World

pb = skill_service_pb2


async def _outcome(
    world: World, call: Callable[[], Awaitable[Any]]
) -> tuple[grpc.StatusCode, bool]:
    """The call's status code, and whether the cache answered it."""
    hits = world.app.cache.hits
    try:
        await call()
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    return code, world.app.cache.hits > hits


def _reads(world: World, skill_id: str, who: Metadata) -> list[Callable[[], Awaitable[Any]]]:
    """GetSkillDefinition, GetPackage of a version and of the current one (not yet sent)."""
    stub = world.stub
    definition = pb.GetSkillDefinitionRequest(skill_id=skill_id)
    package = pb.GetPackageRequest(skill_id=skill_id, version=VERSION)
    current = pb.GetPackageRequest(skill_id=skill_id)
    return [
        lambda: stub.GetSkillDefinition(definition, metadata=who),
        lambda: stub.GetPackage(package, metadata=who),
        lambda: stub.GetPackage(current, metadata=who),
    ]


async def _settle(world: World) -> None:
    """Wait until the server has heard every catalog NOTIFY committed so far (they arrive
    in commit order, so a marker sent now comes after them)."""
    marker = f"~marker-{uuid.uuid4()}"
    conn = await asyncpg.connect(world.db_url)
    try:
        await conn.execute("SELECT pg_notify($1, $2)", CATALOG_CHANNEL, marker)
    finally:
        await conn.close()
    deadline = time.monotonic() + 10
    while world.app.cache.last_change != marker:
        assert time.monotonic() < deadline, "the marker notification never arrived"
        await asyncio.sleep(0.01)


async def _set_public(world: World, skill_id: str, public: bool) -> None:
    await world.stub.UpdateSkillDefinition(
        pb.UpdateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id, public=public),
            update_mask={"paths": ["public"]},
        ),
        metadata=ADMIN,
    )
    await _settle(world)


async def test_a_cached_private_skill_stays_invisible_to_other_tenants(world: World) -> None:
    private = world.skills["other"]  # globex's, private
    await _settle(world)
    # Its owner and an admin read it: now it is cached (read twice, the second a hit).
    for who in (OTHER_READER, ADMIN, OTHER_READER):
        for call in _reads(world, private, who):
            assert (await _outcome(world, call))[0] is grpc.StatusCode.OK
    # Another tenant gets NOT_FOUND from the cached rows, as it would from SQL.
    for call in _reads(world, private, READER):
        assert await _outcome(world, call) == (grpc.StatusCode.NOT_FOUND, True)

    # Made public, it is visible to every tenant; private again, hidden again.
    await _set_public(world, private, True)
    for call in _reads(world, private, READER):
        assert (await _outcome(world, call))[0] is grpc.StatusCode.OK
    for call in _reads(world, private, READER):
        assert await _outcome(world, call) == (grpc.StatusCode.OK, True)
    await _set_public(world, private, False)
    for call in _reads(world, private, READER):
        assert (await _outcome(world, call))[0] is grpc.StatusCode.NOT_FOUND
    for call in _reads(world, private, READER):
        assert await _outcome(world, call) == (grpc.StatusCode.NOT_FOUND, True)


async def test_writes_check_the_owner_in_the_table_not_in_the_cache(world: World) -> None:
    # acme's private skill, cached as acme's.
    skill_id = "cache-handover"
    await world.stub.CreateSkillDefinition(
        pb.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id, tenant="acme")
        ),
        metadata=ADMIN,
    )
    await _settle(world)
    get = pb.GetSkillDefinitionRequest(skill_id=skill_id)
    await world.stub.GetSkillDefinition(get, metadata=PUBLISHER)
    # The id now belongs to globex (deleted and re-created elsewhere), and this server has
    # not heard of it yet: the change is made with the catalog trigger off.
    conn = await asyncpg.connect(world.db_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE skill_definitions SET tenant = 'globex' WHERE skill_id = $1", skill_id
            )
    finally:
        await conn.close()
    # Reads may still answer from the stale row (bounded by NOTIFY, README) ...
    assert await _outcome(
        world, lambda: world.stub.GetSkillDefinition(get, metadata=PUBLISHER)
    ) == (
        grpc.StatusCode.OK,
        True,
    )
    # ... but no write lets acme act on globex's skill.
    writes = [
        lambda: world.stub.DeleteSkillDefinition(
            pb.DeleteSkillDefinitionRequest(skill_id=skill_id, force=True), metadata=PUBLISHER
        ),
        lambda: world.stub.Rollback(
            pb.RollbackRequest(skill_id=skill_id, target_version=VERSION), metadata=PUBLISHER
        ),
        lambda: world.stub.DeletePackage(
            pb.DeletePackageRequest(skill_id=skill_id, version=VERSION), metadata=PUBLISHER
        ),
    ]
    for call in writes:
        assert (await _outcome(world, call))[0] is grpc.StatusCode.NOT_FOUND
    conn = await asyncpg.connect(world.db_url)
    try:
        owner = await conn.fetchval(
            "SELECT tenant FROM skill_definitions WHERE skill_id = $1", skill_id
        )
    finally:
        await conn.close()
    assert owner == "globex"
