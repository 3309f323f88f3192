"""WatchSkills shows each caller what SPEC §7 lets it see, live and when replaying."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from skillsvc.server import build_server
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.auth.conftest import (
    ADMIN,
    OTHER_READER,
    READER,
    bearer,
    create,
    finish,
    install,
    jwt_settings,
    mint,
)
from tests.helpers import reason
from tests.packages import skill_archive
from tests.watch.conftest import Stub, Watch, watching

NEWCOMER = bearer(mint("erin@initech", "initech", ["reader"]))
"""A tenant that never watched while the skill was public."""
SUCCEEDED = resources_pb2.OPERATION_STATE_SUCCEEDED


@pytest.fixture
async def jwt_stub(db_url: str, tmp_path: Path) -> AsyncIterator[Stub]:
    app = await build_server(jwt_settings(db_url, tmp_path / "data"))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            yield skill_service_pb2_grpc.SkillServiceStub(channel)
    finally:
        await app.stop(0)


async def _set_public(stub: Stub, skill_id: str, public: bool) -> None:
    await stub.UpdateSkillDefinition(
        skill_service_pb2.UpdateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id, public=public),
            update_mask=field_mask_pb2.FieldMask(paths=["public"]),
        ),
        metadata=ADMIN,
    )


def _seen(watch: Watch) -> list[tuple[str, str]]:
    return [
        (resources_pb2.SkillEventType.Name(e.type).removeprefix("SKILL_EVENT_TYPE_"), e.skill_id)
        for e in watch.changes
    ]


async def _changes(stub: Stub, acme: Watch, globex: Watch) -> None:
    """As an admin: one skill of each kind, then one made private, then a fence.

    Each step waits until both tenants' streams have what they may see of it, so what
    was shown live does not depend on how fast the streams are read (a skill going
    private drops what a watcher still held of it, see the replay below)."""
    await create(stub, "acme-private", ADMIN, tenant="acme")
    await create(stub, "globex-private", ADMIN, tenant="globex")
    await create(stub, "globex-public", ADMIN, tenant="globex", public=True)
    await create(stub, "platform-skill", ADMIN)
    data = skill_archive("globex-public", "1.0.0")
    operation = await install(stub, "globex-public", data, ADMIN)
    assert (await finish(stub, operation.operation_id, ADMIN)).state == SUCCEEDED
    await acme.count(5)
    await globex.count(5)
    # Going private: still shown to whoever saw it before; later changes are not.
    for n, public in enumerate((False, True, False)):
        await _set_public(stub, "globex-public", public)
        await acme.count(6 + n)
        await globex.count(6 + n)
    await stub.UpdateSkillDefinition(
        skill_service_pb2.UpdateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id="globex-public", description="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=ADMIN,
    )
    # Seen by everyone, last: once a watcher has it, it has everything before it.
    await create(stub, "zz-fence", ADMIN)


ACME_SEES = [
    ("DEFINITION_CREATED", "acme-private"),
    ("DEFINITION_CREATED", "globex-public"),
    ("DEFINITION_CREATED", "platform-skill"),
    ("PACKAGE_READY", "globex-public"),
    ("CURRENT_CHANGED", "globex-public"),
    ("DEFINITION_UPDATED", "globex-public"),
    ("DEFINITION_UPDATED", "globex-public"),
    ("DEFINITION_UPDATED", "globex-public"),
    ("DEFINITION_CREATED", "zz-fence"),
]
GLOBEX_SEES = [
    ("DEFINITION_CREATED", "globex-private"),
    ("DEFINITION_CREATED", "globex-public"),
    ("DEFINITION_CREATED", "platform-skill"),
    ("PACKAGE_READY", "globex-public"),
    ("CURRENT_CHANGED", "globex-public"),
    *[("DEFINITION_UPDATED", "globex-public")] * 4,
    ("DEFINITION_CREATED", "zz-fence"),
]
# Replayed after the skill went private: its history (creation, versions, the time it
# was public again) is the owner's now; others get only the update that made it
# private, which tells a watcher that knew the skill to drop it.
ACME_REPLAYS = [
    ("DEFINITION_CREATED", "acme-private"),
    ("DEFINITION_CREATED", "platform-skill"),
    ("DEFINITION_UPDATED", "globex-public"),
    ("DEFINITION_CREATED", "zz-fence"),
]


async def test_each_caller_sees_its_tenant_and_public_skills_and_admins_all(
    jwt_stub: Stub,
) -> None:
    stub = jwt_stub
    async with (
        watching(stub, metadata=ADMIN) as admin,
        watching(stub, metadata=READER) as acme,
        watching(stub, metadata=OTHER_READER) as globex,
        watching(stub, skill_ids=("globex-private",), metadata=READER) as prying,
        watching(stub, skill_ids=("globex-private", "acme-private"), metadata=READER) as named,
    ):
        for watch in (admin, acme, globex, prying, named):
            await watch.synced()
        await _changes(stub, acme, globex)
        await admin.count(11)
        await acme.count(len(ACME_SEES))
        await globex.count(len(GLOBEX_SEES))
        await named.count(1)
        # The fence reached the admin's stream: had anything reached the prying one,
        # it would be there by now (one hub reads and hands out every page).
        since = admin.changes[0].seq - 1
    assert [name for _, name in _seen(admin)] == [
        "acme-private",
        "globex-private",
        "globex-public",
        "platform-skill",
        *["globex-public"] * 6,
        "zz-fence",
    ]
    assert _seen(acme) == ACME_SEES
    assert _seen(globex) == GLOBEX_SEES
    assert prying.changes == []
    assert _seen(named) == [("DEFINITION_CREATED", "acme-private")]
    assert {e.tenant for e in acme.changes} == {"acme", "globex", ""}
    # Replaying from the table applies the same rule to what is private now: nothing
    # of the skill's past shows to another tenant, whether it saw it live or not.
    async with (
        watching(stub, since=since, metadata=READER) as acme_again,
        watching(stub, since=since, metadata=OTHER_READER) as globex_again,
        watching(stub, since=since, metadata=NEWCOMER) as newcomer,
        watching(stub, since=since, skill_ids=("globex-private",), metadata=READER) as pry_again,
    ):
        for watch in (acme_again, globex_again, newcomer, pry_again):
            await watch.synced()
    assert _seen(acme_again) == ACME_REPLAYS
    assert _seen(newcomer) == ACME_REPLAYS[1:]
    assert _seen(globex_again) == GLOBEX_SEES
    assert [e.seq for e in globex_again.changes] == [e.seq for e in globex.changes]
    assert pry_again.changes == []


async def test_the_stream_ends_unauthenticated_when_its_token_expires(
    db_url: str, tmp_path: Path
) -> None:
    app = await build_server(jwt_settings(db_url, tmp_path / "data", jwt_leeway_seconds=0))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = skill_service_pb2_grpc.SkillServiceStub(channel)
            expiring = bearer(mint("bob@acme", "acme", ["reader"], ttl=2))
            async with watching(stub, metadata=expiring) as watch:
                await watch.synced()
                await create(stub, "before-exp", ADMIN)
                await watch.count(1)
                error = await watch.ending(timeout=10)
            assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason(error) == "TOKEN_EXPIRED"
            assert [name for _, name in _seen(watch)] == ["before-exp"]
            # Resumed with a fresh token from the last seq: nothing lost meanwhile.
            await create(stub, "after-exp", ADMIN)
            fresh = bearer(mint("bob@acme", "acme", ["reader"]))
            async with watching(stub, since=watch.events[-1].seq, metadata=fresh) as resumed:
                await resumed.synced()
            assert [name for _, name in _seen(resumed)] == ["after-exp"]
    finally:
        await app.stop(0)
