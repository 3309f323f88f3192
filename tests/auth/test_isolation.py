"""Two tenants side by side: neither learns that the other's private things exist.

For each direction (acme looking at globex, globex looking at acme), every read RPC,
InstallProgress included, answers ``NOT_FOUND`` for the other tenant's private skill,
its package and its operation, exactly as it answers for ids that do not exist at all;
listings leave them out. Public and platform skills stay visible to both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from skillsvc.v1 import skill_service_pb2 as pb
from tests.auth.conftest import (
    OTHER_PUBLISHER,
    OTHER_READER,
    PUBLISHER,
    READER,
    VERSION,
    Metadata,
    World,
    create,
    finish,
    install,
)
from tests.helpers import expect_status, reason
from tests.packages import skill_archive

MISSING_OPERATION = "6f1c3c39-3d2b-4a57-9a38-6b1f2bd1f1a0"


async def _drain(call: Any) -> list[Any]:
    return [item async for item in call]


def read_calls(world: World, skill: str, operation: str, md: Metadata) -> dict[str, Any]:
    """Every read RPC about ``skill``/``operation``, as ``md``."""
    s = world.stub
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "GetSkillDefinition": lambda: s.GetSkillDefinition(
            pb.GetSkillDefinitionRequest(skill_id=skill), metadata=md
        ),
        "GetPackage(current)": lambda: s.GetPackage(
            pb.GetPackageRequest(skill_id=skill), metadata=md
        ),
        "GetPackage(version)": lambda: s.GetPackage(
            pb.GetPackageRequest(skill_id=skill, version=VERSION), metadata=md
        ),
        "ListPackages": lambda: s.ListPackages(pb.ListPackagesRequest(skill_id=skill), metadata=md),
        "DownloadPackage": lambda: _drain(
            s.DownloadPackage(pb.DownloadPackageRequest(skill_id=skill), metadata=md)
        ),
        "DownloadPackage(version)": lambda: _drain(
            s.DownloadPackage(
                pb.DownloadPackageRequest(skill_id=skill, version=VERSION), metadata=md
            )
        ),
        "ListOperations": lambda: s.ListOperations(
            pb.ListOperationsRequest(skill_id=skill), metadata=md
        ),
        "GetOperation": lambda: s.GetOperation(
            pb.GetOperationRequest(operation_id=operation), metadata=md
        ),
        "InstallProgress": lambda: _drain(
            s.InstallProgress(pb.InstallProgressRequest(operation_id=operation), metadata=md)
        ),
    }
    return calls


async def _all_ids(world: World, md: Metadata) -> set[str]:
    ids: set[str] = set()
    token = ""
    while True:
        page = await world.stub.ListSkillDefinitions(
            pb.ListSkillDefinitionsRequest(page_size=2, page_token=token, include_inactive=True),
            metadata=md,
        )
        ids |= {d.skill_id for d in page.definitions}
        token = page.next_page_token
        if not token:
            return ids


@pytest.mark.parametrize(
    ("viewers", "own", "other"),
    [
        ((PUBLISHER, READER), "own", "other"),  # acme looks at globex
        ((OTHER_PUBLISHER, OTHER_READER), "other", "own"),  # globex looks at acme
    ],
    ids=["acme-sees-globex", "globex-sees-acme"],
)
async def test_private_things_of_another_tenant_are_not_found(
    world: World, viewers: tuple[Metadata, ...], own: str, other: str
) -> None:
    hidden_skill, hidden_op = world.skills[other], world.operations[other]
    for md in viewers:
        for name, call in read_calls(world, hidden_skill, hidden_op, md).items():
            error = await expect_status(call(), grpc.StatusCode.NOT_FOUND)
            assert reason(error) == "NOT_FOUND", name
        # Indistinguishable from ids that exist nowhere.
        for name, call in read_calls(world, "no-such-skill", MISSING_OPERATION, md).items():
            error = await expect_status(call(), grpc.StatusCode.NOT_FOUND)
            assert reason(error) == "NOT_FOUND", name
        # The own tenant's, public and platform skills stay readable.
        for visible in (own, "other-public", "platform"):
            for call in read_calls(
                world, world.skills[visible], world.operations[visible], md
            ).values():
                await call()
        listed = await _all_ids(world, md)
        assert hidden_skill not in listed
        assert {world.skills[own], world.skills["other-public"], world.skills["platform"]} <= listed


async def test_not_found_messages_do_not_depend_on_existence(world: World) -> None:
    """The hidden id and an unknown one get the same message, the id aside."""
    hidden, hidden_op = world.skills["other"], world.operations["other"]
    hidden_calls = read_calls(world, hidden, hidden_op, READER)
    missing_calls = read_calls(world, "zz-missing-zz", MISSING_OPERATION, READER)
    for name in hidden_calls:
        a = await expect_status(hidden_calls[name](), grpc.StatusCode.NOT_FOUND)
        b = await expect_status(missing_calls[name](), grpc.StatusCode.NOT_FOUND)
        normalise = {hidden: "<id>", hidden_op: "<id>"}
        text_a = a.details() or ""
        for old, new in normalise.items():
            text_a = text_a.replace(old, new)
        text_b = (
            (b.details() or "").replace("zz-missing-zz", "<id>").replace(MISSING_OPERATION, "<id>")
        )
        assert text_a == text_b, name


async def test_writes_on_another_tenants_private_skill_are_not_found(world: World) -> None:
    hidden = world.skills["other"]
    data = skill_archive(hidden, "5.0.0")
    await expect_status(
        install(world.stub, hidden, data, PUBLISHER, version="5.0.0"), grpc.StatusCode.NOT_FOUND
    )
    await expect_status(
        world.stub.Rollback(pb.RollbackRequest(skill_id=hidden), metadata=PUBLISHER),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_status(
        world.stub.DeletePackage(
            pb.DeletePackageRequest(skill_id=hidden, version=VERSION), metadata=PUBLISHER
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_status(
        world.stub.Retry(
            pb.RetryRequest(operation_id=world.operations["other"]), metadata=PUBLISHER
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_publishers_own_private_skill_works_end_to_end(world: World) -> None:
    """A publisher creates, installs and reads its own private skill; the other tenant cannot."""
    await create(world.stub, "acme-fresh", PUBLISHER, description="fresh")
    data = skill_archive("acme-fresh", "0.1.0")
    op = await install(world.stub, "acme-fresh", data, PUBLISHER, version="0.1.0")
    final = await finish(world.stub, op.operation_id, PUBLISHER)
    assert final.requested_by == "alice@acme"
    downloaded = await _drain(
        world.stub.DownloadPackage(
            pb.DownloadPackageRequest(skill_id="acme-fresh"), metadata=READER
        )
    )
    assert b"".join(m.chunk for m in downloaded[1:]) == data
    for call in read_calls(world, "acme-fresh", op.operation_id, OTHER_READER).values():
        await expect_status(call(), grpc.StatusCode.NOT_FOUND)
