"""SkillDefinition CRUD through a real server and a real database."""

from __future__ import annotations

import asyncpg
import grpc
from google.protobuf import field_mask_pb2

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import bad_fields, expect_status, reason

Stub = skill_service_pb2_grpc.SkillServiceStub


def _definition(skill_id: str, **fields: object) -> skill_service_pb2.CreateSkillDefinitionRequest:
    return skill_service_pb2.CreateSkillDefinitionRequest(
        definition=resources_pb2.SkillDefinition(skill_id=skill_id, **fields)  # type: ignore[arg-type]
    )


async def test_create_then_get_returns_the_stored_definition(
    stub: Stub, db: asyncpg.Connection
) -> None:
    created = await stub.CreateSkillDefinition(
        _definition("pdf-tools", display_name="PDF tools", description="Reads PDFs")
    )
    assert created.skill_id == "pdf-tools"
    assert created.display_name == "PDF tools"
    assert created.description == "Reads PDFs"
    # Unset optional bools take the defaults of SPEC §4 for a platform definition.
    assert created.HasField("active") and created.active
    assert created.HasField("public") and created.public
    assert created.tenant == ""
    assert created.current_version == ""
    assert created.create_time.seconds > 0
    assert created.update_time == created.create_time

    fetched = await stub.GetSkillDefinition(
        skill_service_pb2.GetSkillDefinitionRequest(skill_id="pdf-tools")
    )
    assert fetched == created
    row = await db.fetchrow("SELECT * FROM skill_definitions WHERE skill_id = 'pdf-tools'")
    assert row["display_name"] == "PDF tools" and row["public"] is True


async def test_tenant_definition_defaults_to_private(stub: Stub) -> None:
    created = await stub.CreateSkillDefinition(_definition("acme-tool", tenant="acme"))
    assert created.tenant == "acme"
    assert created.public is False
    explicit = await stub.CreateSkillDefinition(
        _definition("acme-shared", tenant="acme", public=True, active=False)
    )
    assert explicit.public is True
    assert explicit.active is False


async def test_duplicate_id_is_already_exists(stub: Stub) -> None:
    await stub.CreateSkillDefinition(_definition("dup"))
    err = await expect_status(
        stub.CreateSkillDefinition(_definition("dup")), grpc.StatusCode.ALREADY_EXISTS
    )
    assert "dup" in (err.details() or "")


async def test_bad_skill_id_is_invalid_argument_naming_the_field(stub: Stub) -> None:
    for bad in ["", "Upper", "-lead", "trail-", "dou--ble", "a" * 65, "sp ace", "ünï"]:
        err = await expect_status(
            stub.CreateSkillDefinition(_definition(bad)), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert bad_fields(err) == ["definition.skill_id"], bad
        assert reason(err) == "INVALID_ARGUMENT"


async def test_missing_definition_and_oversized_fields(stub: Stub) -> None:
    err = await expect_status(
        stub.CreateSkillDefinition(skill_service_pb2.CreateSkillDefinitionRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(err) == ["definition"]
    err = await expect_status(
        stub.CreateSkillDefinition(
            _definition("ok", display_name="x" * 201, description="y" * 1025)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(err) == ["definition.display_name", "definition.description"]


async def test_unknown_id_is_not_found(stub: Stub) -> None:
    await expect_status(
        stub.GetSkillDefinition(skill_service_pb2.GetSkillDefinitionRequest(skill_id="nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    err = await expect_status(
        stub.GetSkillDefinition(skill_service_pb2.GetSkillDefinitionRequest(skill_id="Bad!")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(err) == ["skill_id"]


async def test_list_pages_through_everything_in_order(stub: Stub) -> None:
    ids = [f"skill-{i:02d}" for i in range(23)]
    for skill_id in reversed(ids):
        await stub.CreateSkillDefinition(_definition(skill_id))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListSkillDefinitions(
            skill_service_pb2.ListSkillDefinitionsRequest(page_size=10, page_token=token)
        )
        pages += 1
        seen += [d.skill_id for d in page.definitions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert pages == 3


async def test_list_hides_inactive_unless_asked(stub: Stub) -> None:
    await stub.CreateSkillDefinition(_definition("on"))
    await stub.CreateSkillDefinition(_definition("off", active=False))
    default = await stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest())
    assert [d.skill_id for d in default.definitions] == ["on"]
    everything = await stub.ListSkillDefinitions(
        skill_service_pb2.ListSkillDefinitionsRequest(include_inactive=True)
    )
    assert [d.skill_id for d in everything.definitions] == ["off", "on"]
    assert everything.next_page_token == ""


async def test_page_tokens_are_checked(stub: Stub) -> None:
    for i in range(3):
        await stub.CreateSkillDefinition(_definition(f"s{i}"))
    first = await stub.ListSkillDefinitions(
        skill_service_pb2.ListSkillDefinitionsRequest(page_size=1)
    )
    assert first.next_page_token
    # A token from one query does not apply to another.
    err = await expect_status(
        stub.ListSkillDefinitions(
            skill_service_pb2.ListSkillDefinitionsRequest(
                page_size=1, page_token=first.next_page_token, include_inactive=True
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(err) == ["page_token"]
    for garbage in ["not-a-token", "eyJ4IjoxfQ", "%%%"]:
        err = await expect_status(
            stub.ListSkillDefinitions(
                skill_service_pb2.ListSkillDefinitionsRequest(page_token=garbage)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_fields(err) == ["page_token"]
    err = await expect_status(
        stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(err) == ["page_size"]


async def test_update_changes_only_masked_fields(stub: Stub) -> None:
    created = await stub.CreateSkillDefinition(
        _definition("upd", display_name="Old", description="Old description")
    )
    updated = await stub.UpdateSkillDefinition(
        skill_service_pb2.UpdateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(
                skill_id="upd", display_name="New", description="ignored", active=False
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "active"]),
        )
    )
    assert updated.display_name == "New"
    assert updated.description == "Old description"
    assert updated.active is False
    assert updated.public is True
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()


async def test_update_mask_is_validated(stub: Stub) -> None:
    await stub.CreateSkillDefinition(_definition("upd"))
    for paths in ([], ["skill_id"], ["current_version"], ["tenant"], ["nonsense"]):
        err = await expect_status(
            stub.UpdateSkillDefinition(
                skill_service_pb2.UpdateSkillDefinitionRequest(
                    definition=resources_pb2.SkillDefinition(skill_id="upd"),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_fields(err) == ["update_mask"], paths
    await expect_status(
        stub.UpdateSkillDefinition(
            skill_service_pb2.UpdateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(skill_id="ghost"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_update_star_mask_sets_every_updatable_field(stub: Stub) -> None:
    await stub.CreateSkillDefinition(_definition("star", display_name="A", description="B"))
    updated = await stub.UpdateSkillDefinition(
        skill_service_pb2.UpdateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(
                skill_id="star", display_name="C", description="D", active=True, public=False
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["*"]),
        )
    )
    assert (updated.display_name, updated.description, updated.active, updated.public) == (
        "C",
        "D",
        True,
        False,
    )


async def test_delete_removes_and_then_not_found(stub: Stub, db: asyncpg.Connection) -> None:
    await stub.CreateSkillDefinition(_definition("gone"))
    await stub.DeleteSkillDefinition(
        skill_service_pb2.DeleteSkillDefinitionRequest(skill_id="gone")
    )
    assert await db.fetchval("SELECT count(*) FROM skill_definitions") == 0
    await expect_status(
        stub.DeleteSkillDefinition(skill_service_pb2.DeleteSkillDefinitionRequest(skill_id="gone")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_delete_refuses_while_packages_exist(stub: Stub, db: asyncpg.Connection) -> None:
    await stub.CreateSkillDefinition(_definition("busy"))
    await db.execute(
        "INSERT INTO skill_packages (skill_id, version, state, source_type) "
        "VALUES ('busy', '1.0.0', 'READY', 'UPLOAD')"
    )
    err = await expect_status(
        stub.DeleteSkillDefinition(skill_service_pb2.DeleteSkillDefinitionRequest(skill_id="busy")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(err) == "HAS_PACKAGES"
    assert await db.fetchval("SELECT count(*) FROM skill_definitions") == 1


async def test_definitions_survive_a_server_restart(settings, stub: Stub, app) -> None:  # type: ignore[no-untyped-def]
    from skillsvc.server import build_server

    await stub.CreateSkillDefinition(_definition("durable", description="kept"))
    await app.stop(0)
    again = await build_server(settings)
    await again.start()
    try:
        async with grpc.aio.insecure_channel(again.address) as chan:
            fetched = await skill_service_pb2_grpc.SkillServiceStub(chan).GetSkillDefinition(
                skill_service_pb2.GetSkillDefinitionRequest(skill_id="durable")
            )
        assert fetched.description == "kept"
    finally:
        await again.stop(0)
