"""Health, reflection and the error mapping of a real server."""

from __future__ import annotations

import asyncio
import sys
import uuid
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from skillsvc.server import GIL_SWITCH_INTERVAL_SECONDS, App
from skillsvc.v1 import skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import bad_fields, expect_status, reason

SERVICE = "skillsvc.v1.SkillService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# SPEC §4: every RPC of the contract.
SPEC_RPCS = {
    "CreateSkillDefinition",
    "GetSkillDefinition",
    "ListSkillDefinitions",
    "UpdateSkillDefinition",
    "DeleteSkillDefinition",
    "Install",
    "InstallProgress",
    "GetOperation",
    "ListOperations",
    "Retry",
    "Rollback",
    "Validate",
    "ListPackages",
    "GetPackage",
    "DeletePackage",
    "DownloadPackage",
    "WatchSkills",
}


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service)
    )
    return int(response.status)


async def test_health_reports_serving_for_server_and_service(channel: grpc.aio.Channel) -> None:
    assert await _health(channel) == SERVING
    assert await _health(channel, SERVICE) == SERVING
    await expect_status(
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope")),
        grpc.StatusCode.NOT_FOUND,
    )


async def _wait_for(channel: grpc.aio.Channel, wanted: int) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE)
    )
    async with asyncio.timeout(10):
        async for update in watch:
            if update.status == wanted:
                watch.cancel()
                return


async def test_health_follows_the_database(
    app: App, channel: grpc.aio.Channel, pg_server_url: str, db_url: str
) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await _wait_for(channel, NOT_SERVING)
        # While the database is down, RPCs that need it say UNAVAILABLE, not UNKNOWN.
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await expect_status(
            stub.GetSkillDefinition(skill_service_pb2.GetSkillDefinitionRequest(skill_id="x")),
            grpc.StatusCode.UNAVAILABLE,
        )
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await _wait_for(channel, SERVING)
        # …and the service recovers on its own.
        await expect_status(
            stub.GetSkillDefinition(skill_service_pb2.GetSkillDefinitionRequest(skill_id="x")),
            grpc.StatusCode.NOT_FOUND,
        )
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_a_serving_process_hands_the_gil_back_to_its_loop_within_a_millisecond(
    app: App,
) -> None:
    # The default 5 ms made health checks queue behind worker threads during installs.
    assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL_SECONDS)
    assert GIL_SWITCH_INTERVAL_SECONDS <= 0.001


async def test_health_follows_the_store(app: App, channel: grpc.aio.Channel) -> None:
    staging = app.store.staging
    staging.rename(staging.with_name("staging-away"))
    staging.write_text("not a directory")  # the probe can no longer create files in it
    try:
        await _wait_for(channel, NOT_SERVING)
    finally:
        staging.unlink()
        staging.with_name("staging-away").rename(staging)
    await _wait_for(channel, SERVING)


async def test_graceful_stop_reports_not_serving(app: App, channel: grpc.aio.Channel) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE)
    )
    first = await watch.read()
    assert first.status == SERVING
    stopping = asyncio.create_task(app.stop(1))
    second = await watch.read()
    assert second.status == NOT_SERVING
    await stopping


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(request)
    response = await call.read()
    await call.done_writing()
    return response


async def test_reflection_lists_services_and_describes_every_rpc(channel: grpc.aio.Channel) -> None:
    listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names

    from google.protobuf import descriptor_pb2

    described = await _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    methods = {
        m.name for f in files for s in f.service if s.name == "SkillService" for m in s.method
    }
    assert methods == SPEC_RPCS


async def test_streaming_rpcs_map_errors_too(stub: skill_service_pb2_grpc.SkillServiceStub) -> None:
    call = stub.InstallProgress(
        skill_service_pb2.InstallProgressRequest(operation_id=str(uuid.uuid4()))
    )
    err = await expect_status(call.read(), grpc.StatusCode.NOT_FOUND)
    assert reason(err) == "NOT_FOUND"
    call = stub.DownloadPackage(skill_service_pb2.DownloadPackageRequest(skill_id="Bad!"))
    err = await expect_status(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
    assert bad_fields(err) == ["skill_id"]


async def test_unexpected_errors_become_a_generic_internal(
    app: App,
    stub: skill_service_pb2_grpc.SkillServiceStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from skillsvc.core.definitions import Definitions

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Definitions, "get", broken)
    err = await expect_status(
        stub.GetSkillDefinition(skill_service_pb2.GetSkillDefinitionRequest(skill_id="x")),
        grpc.StatusCode.INTERNAL,
    )
    assert "secret" not in (err.details() or "")
    assert "Traceback" not in (err.details() or "")
    assert "secret internals" in caplog.text  # logged with its traceback instead


async def test_rpc_metrics_count_by_method_and_code(
    stub: skill_service_pb2_grpc.SkillServiceStub,
) -> None:
    from prometheus_client import REGISTRY

    def count(code: str) -> float:
        value = REGISTRY.get_sample_value(
            "grpc_server_handled_total",
            {
                "grpc_type": "unary",
                "grpc_service": "skillsvc.v1.SkillService",
                "grpc_method": "GetSkillDefinition",
                "grpc_code": code,
            },
        )
        return value or 0.0

    before = count("NOT_FOUND")
    await expect_status(
        stub.GetSkillDefinition(skill_service_pb2.GetSkillDefinitionRequest(skill_id="none")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert count("NOT_FOUND") == before + 1
