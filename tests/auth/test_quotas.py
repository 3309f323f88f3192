"""Quotas: definitions per tenant and versions per skill, also under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2_grpc
from tests.auth.conftest import ADMIN, PUBLISHER, SECRET, create, finish, install
from tests.helpers import detail, expect_status, reason, rich_status
from tests.packages import make_archive, skill_archive, skill_md

Stub = skill_service_pb2_grpc.SkillServiceStub
SUCCEEDED = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED


@pytest.fixture
async def quota_stub(make_app) -> AsyncIterator[Stub]:  # type: ignore[no-untyped-def]
    """A JWT server whose tenants may own 3 definitions and whose skills 3 versions."""
    app: App = await make_app(
        auth="jwt", jwt_secret=SECRET, max_skills_per_tenant=3, max_versions_per_skill=3
    )
    async with grpc.aio.insecure_channel(app.address) as channel:
        yield skill_service_pb2_grpc.SkillServiceStub(channel)


def quota_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    failure = detail(error, error_details_pb2.QuotaFailure)
    return [(v.subject, v.description) for v in failure.violations]


async def test_definitions_per_tenant(quota_stub: Stub) -> None:
    admin = ADMIN
    for i in range(3):
        await create(quota_stub, f"acme-{i}", PUBLISHER)
    error = await expect_status(
        create(quota_stub, "acme-3", PUBLISHER), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert reason(error) == "QUOTA_EXCEEDED"
    [(subject, description)] = quota_violations(error)
    assert subject == "tenant:acme"
    assert "SKILLSVC_MAX_SKILLS_PER_TENANT" in description
    # Admins are held to the tenant's quota too; other tenants and the platform are not
    # affected, and the platform has a quota of its own.
    await expect_status(
        create(quota_stub, "acme-4", admin, tenant="acme"), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    await create(quota_stub, "globex-0", admin, tenant="globex")
    for i in range(3):
        await create(quota_stub, f"platform-{i}", admin)
    error = await expect_status(
        create(quota_stub, "platform-3", admin), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert quota_violations(error)[0][0] == "platform"


async def test_concurrent_creates_cannot_exceed_the_quota(
    make_app,
    db: asyncpg.Connection,  # type: ignore[no-untyped-def]
) -> None:
    app: App = await make_app(max_skills_per_tenant=5)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        results = await asyncio.gather(
            *(create(stub, f"race-{i}", (), tenant="racers") for i in range(40)),
            return_exceptions=True,
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(results) - len(errors) == 5
    assert all(
        isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for e in errors
    ), errors
    assert await db.fetchval("SELECT count(*) FROM skill_definitions WHERE tenant = 'racers'") == 5


async def test_versions_per_skill(quota_stub: Stub) -> None:
    await create(quota_stub, "acme-tool", PUBLISHER)
    installed: dict[str, bytes] = {}
    for version in ("1.0.0", "1.1.0"):
        data = skill_archive("acme-tool", version)
        op = await install(quota_stub, "acme-tool", data, PUBLISHER, version=version)
        assert (await finish(quota_stub, op.operation_id, PUBLISHER)).state == SUCCEEDED
        installed[version] = data
    # A FAILED version does not count...
    broken = make_archive({"SKILL.md": skill_md("acme-tool", "1.2.0"), "../evil": "x"})
    op = await install(quota_stub, "acme-tool", broken, PUBLISHER, version="1.2.0")
    assert (await finish(quota_stub, op.operation_id, PUBLISHER)).state == FAILED
    # ...so a third one fits.
    data = skill_archive("acme-tool", "1.3.0")
    op = await install(quota_stub, "acme-tool", data, PUBLISHER, version="1.3.0")
    assert (await finish(quota_stub, op.operation_id, PUBLISHER)).state == SUCCEEDED
    installed["1.3.0"] = data

    # A fourth is refused before its bytes are taken, with the QuotaFailure detail.
    error = await expect_status(
        install(
            quota_stub, "acme-tool", skill_archive("acme-tool", "2.0.0"), PUBLISHER, version="2.0.0"
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert reason(error) == "QUOTA_EXCEEDED"
    [(subject, description)] = quota_violations(error)
    assert subject == "skill:acme-tool"
    assert "SKILLSVC_MAX_VERSIONS_PER_SKILL" in description
    # Installing the FAILED 1.2.0 again would make a fourth live version as well.
    refused = await expect_status(
        install(
            quota_stub, "acme-tool", skill_archive("acme-tool", "1.2.0"), PUBLISHER, version="1.2.0"
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    # Without a version in the request it is found in the manifest, after the upload:
    # the operation fails with the same google.rpc.Status as the RPC error, details
    # (ErrorInfo reason and metadata, QuotaFailure) included.
    op = await install(quota_stub, "acme-tool", skill_archive("acme-tool", "3.0.0"), PUBLISHER)
    final = await finish(quota_stub, op.operation_id, PUBLISHER)
    assert final.state == FAILED
    assert final.error == rich_status(refused)
    info = error_details_pb2.ErrorInfo()
    final.error.details[0].Unpack(info)
    assert info.reason == "QUOTA_EXCEEDED"
    assert dict(info.metadata) == {"quota": "SKILLSVC_MAX_VERSIONS_PER_SKILL", "limit": "3"}
    failures = [d for d in final.error.details if d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR)]
    assert len(failures) == 1
    # Installed versions may still be installed again (same bytes: nothing new).
    op = await install(quota_stub, "acme-tool", installed["1.0.0"], PUBLISHER, version="1.0.0")
    assert (await finish(quota_stub, op.operation_id, PUBLISHER)).state == SUCCEEDED


async def test_concurrent_installs_cannot_exceed_the_version_quota(
    make_app,
    db: asyncpg.Connection,  # type: ignore[no-untyped-def]
) -> None:
    app: App = await make_app(max_versions_per_skill=5)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create(stub, "crowded", ())

        async def one(i: int) -> Any:
            version = f"1.0.{i}"
            op = await install(
                stub, "crowded", skill_archive("crowded", version), (), version=version
            )
            return await finish(stub, op.operation_id, ())

        results = await asyncio.gather(*(one(i) for i in range(25)), return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(done) == 5 and all(r.state == SUCCEEDED for r in done)
    assert all(
        isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for e in refused
    ), refused
    assert (
        await db.fetchval(
            "SELECT count(*) FROM skill_packages WHERE skill_id = 'crowded' AND state <> 'FAILED'"
        )
        == 5
    )
