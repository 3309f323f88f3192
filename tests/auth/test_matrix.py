"""Every RPC, every role, every kind of target, with the exact status code (SPEC §7).

The expected codes are written out here from the rules, independently of the
server's table (``skillsvc.auth.RPC_CAPABILITIES``):

- no token: ``UNAUTHENTICATED`` everywhere;
- reads (definitions, packages, downloads, operations, progress, watches): any role,
  on the caller's own tenant's, public and platform skills; another tenant's private
  skill is ``NOT_FOUND``, except for the reads that filter (a listing, a watch);
- ``Validate``: admins and publishers;
- writes: admins anywhere; publishers on their own tenant's skills, ``NOT_FOUND`` on
  another tenant's private ones and ``PERMISSION_DENIED`` on visible ones they do
  not own (another tenant's public skill, a platform skill); readers never.

A write that passes authorization is made to stop at a deterministic, harmless
outcome, so the server's state stays the same across the matrix: deleting a
definition that has packages (``FAILED_PRECONDITION``), deleting the current package
(``FAILED_PRECONDITION``), retrying a succeeded install (``FAILED_PRECONDITION``),
rolling back to the current version (``OK``, changes nothing), reinstalling the
installed bytes (``OK``, untouched), an update that sets the same description.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from skillsvc.v1 import resources_pb2, skill_service_pb2
from tests.auth.conftest import (
    ADMIN,
    PUBLISHER,
    READER,
    TARGETS,
    VERSION,
    Metadata,
    World,
    upload_spec,
)
from tests.packages import skill_archive

C = grpc.StatusCode
ROLES: dict[str, Metadata] = {"admin": ADMIN, "publisher": PUBLISHER, "reader": READER, "none": ()}

READS = {
    "GetSkillDefinition",
    "ListSkillDefinitions",
    "GetPackage",
    "ListPackages",
    "DownloadPackage",
    "GetOperation",
    "ListOperations",
    "InstallProgress",
    "WatchSkills",
}
# Reads that name no single resource: another tenant's private skill is filtered out,
# never NOT_FOUND (which would tell that it exists).
FILTERED_READS = {"ListSkillDefinitions", "WatchSkills"}
# What a write that is allowed ends with (see the module docstring).
ALLOWED_WRITE = {
    "CreateSkillDefinition": C.OK,
    "UpdateSkillDefinition": C.OK,
    "DeleteSkillDefinition": C.FAILED_PRECONDITION,
    "Install": C.OK,
    "Retry": C.FAILED_PRECONDITION,
    "Rollback": C.OK,
    "DeletePackage": C.FAILED_PRECONDITION,
}
RPCS = sorted([*READS, *ALLOWED_WRITE, "Validate"])


def expected(role: str, target: str, rpc: str) -> grpc.StatusCode:
    """The status SPEC §7 prescribes."""
    if role == "none":
        return C.UNAUTHENTICATED
    if rpc in READS:
        if rpc in FILTERED_READS or role == "admin" or target != "other":
            return C.OK
        return C.NOT_FOUND
    if rpc == "Validate":
        return C.PERMISSION_DENIED if role == "reader" else C.OK
    if role == "reader":
        return C.PERMISSION_DENIED
    if role == "admin":
        return ALLOWED_WRITE[rpc]
    if rpc == "CreateSkillDefinition":
        # An empty tenant means "the caller's own" for a publisher (platform
        # definitions are the admins'); naming another tenant is refused outright.
        return C.OK if target in ("own", "platform") else C.PERMISSION_DENIED
    return {
        "own": ALLOWED_WRITE[rpc],
        "other": C.NOT_FOUND,
        "other-public": C.PERMISSION_DENIED,
        "platform": C.PERMISSION_DENIED,
    }[target]


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def _until_synced(call: Any) -> None:
    """Read a WatchSkills stream (which never ends by itself) up to its SYNCED event."""
    try:
        async for event in call:
            if event.type == resources_pb2.SKILL_EVENT_TYPE_SYNCED:
                return
    finally:
        call.cancel()


async def _validate_messages(skill_id: str) -> AsyncIterator[skill_service_pb2.ValidateRequest]:
    data = skill_archive(skill_id, VERSION)
    yield skill_service_pb2.ValidateRequest(
        spec=skill_service_pb2.ValidateSpec(
            skill_id=skill_id, upload=skill_service_pb2.UploadSource(size_bytes=len(data))
        )
    )
    yield skill_service_pb2.ValidateRequest(chunk=data)


async def _install_messages(
    skill_id: str, data: bytes
) -> AsyncIterator[skill_service_pb2.InstallRequest]:
    yield skill_service_pb2.InstallRequest(
        spec=upload_spec(skill_id, data, version=VERSION, activate=False)
    )
    yield skill_service_pb2.InstallRequest(chunk=data)


def call_for(world: World, rpc: str, target: str, md: Metadata) -> Callable[[], Awaitable[Any]]:
    """A zero-argument coroutine function making ``rpc`` on ``target`` as ``md``."""
    s, skill, op = world.stub, world.skills[target], world.operations[target]
    pb = skill_service_pb2
    tenant = TARGETS[target][1]
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "CreateSkillDefinition": lambda: s.CreateSkillDefinition(
            pb.CreateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(
                    skill_id=f"new-{uuid.uuid4().hex[:10]}", tenant=tenant
                )
            ),
            metadata=md,
        ),
        "GetSkillDefinition": lambda: s.GetSkillDefinition(
            pb.GetSkillDefinitionRequest(skill_id=skill), metadata=md
        ),
        "ListSkillDefinitions": lambda: s.ListSkillDefinitions(
            pb.ListSkillDefinitionsRequest(), metadata=md
        ),
        "UpdateSkillDefinition": lambda: s.UpdateSkillDefinition(
            pb.UpdateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(
                    skill_id=skill, description=f"{target} skill"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
            metadata=md,
        ),
        "DeleteSkillDefinition": lambda: s.DeleteSkillDefinition(
            pb.DeleteSkillDefinitionRequest(skill_id=skill), metadata=md
        ),
        "Install": lambda: s.Install(_install_messages(skill, world.archives[target]), metadata=md),
        "InstallProgress": lambda: _drain(
            s.InstallProgress(pb.InstallProgressRequest(operation_id=op), metadata=md)
        ),
        "GetOperation": lambda: s.GetOperation(
            pb.GetOperationRequest(operation_id=op), metadata=md
        ),
        "ListOperations": lambda: s.ListOperations(
            pb.ListOperationsRequest(skill_id=skill), metadata=md
        ),
        "Retry": lambda: s.Retry(pb.RetryRequest(operation_id=op), metadata=md),
        "Rollback": lambda: s.Rollback(
            pb.RollbackRequest(skill_id=skill, target_version=VERSION, reason="matrix"),
            metadata=md,
        ),
        "Validate": lambda: s.Validate(_validate_messages(skill), metadata=md),
        "ListPackages": lambda: s.ListPackages(pb.ListPackagesRequest(skill_id=skill), metadata=md),
        "GetPackage": lambda: s.GetPackage(pb.GetPackageRequest(skill_id=skill), metadata=md),
        "DeletePackage": lambda: s.DeletePackage(
            pb.DeletePackageRequest(skill_id=skill, version=VERSION), metadata=md
        ),
        "DownloadPackage": lambda: _drain(
            s.DownloadPackage(pb.DownloadPackageRequest(skill_id=skill), metadata=md)
        ),
        "WatchSkills": lambda: _until_synced(
            s.WatchSkills(pb.WatchSkillsRequest(skill_ids=[skill], since=0), metadata=md)
        ),
    }
    return calls[rpc]


async def status_of(call: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str]:
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return C.OK, ""


def test_the_matrix_covers_every_rpc_of_the_service() -> None:
    service = skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"]
    assert set(RPCS) == set(service.methods_by_name)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("rpc", RPCS)
async def test_status(world: World, rpc: str, role: str, target: str) -> None:
    code, message = await status_of(call_for(world, rpc, target, ROLES[role]))
    assert code == expected(role, target, rpc), f"{rpc} as {role} on {target}: {message}"


async def test_a_publisher_creating_without_a_tenant_gets_its_own(world: World) -> None:
    created = await world.stub.CreateSkillDefinition(
        skill_service_pb2.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id="defaults-to-acme")
        ),
        metadata=PUBLISHER,
    )
    assert created.tenant == "acme"
    assert not created.public


async def test_the_matrix_left_the_seeded_skills_as_they_were(world: World) -> None:
    # Runs after the matrix (file order): no write that passed authorization changed
    # what the other cases depend on.
    for target, skill in world.skills.items():
        definition = await world.stub.GetSkillDefinition(
            skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill), metadata=ADMIN
        )
        assert definition.current_version == VERSION, target
