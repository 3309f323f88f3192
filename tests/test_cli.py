"""The ``skillsvc`` command as an operator runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import grpc

from skillsvc.db import load_migrations
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.processes import child_env, free_port


async def _create(address: str, skill_id: str) -> None:
    async with grpc.aio.insecure_channel(address) as chan:
        await skill_service_pb2_grpc.SkillServiceStub(chan).CreateSkillDefinition(
            skill_service_pb2.CreateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(skill_id=skill_id, description="d")
            )
        )


async def _get(address: str, skill_id: str) -> resources_pb2.SkillDefinition:
    async with grpc.aio.insecure_channel(address) as chan:
        return await skill_service_pb2_grpc.SkillServiceStub(chan).GetSkillDefinition(
            skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill_id)
        )


async def test_sigterm_stops_cleanly_with_exit_code_0(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    served = await serve(SKILLSVC_DATABASE_URL=db_url)
    await served.wait_serving()
    await _create(served.address, "one")
    assert await served.terminate() == 0
    assert "stopped" in served.log.read_text()


async def test_two_replicas_start_at_once_on_one_empty_database(serve, empty_db_url: str) -> None:  # type: ignore[no-untyped-def]
    first, second = (
        await serve(SKILLSVC_DATABASE_URL=empty_db_url),
        await serve(SKILLSVC_DATABASE_URL=empty_db_url),
    )
    await asyncio.gather(first.wait_serving(), second.wait_serving())
    await _create(first.address, "shared")
    assert (await _get(second.address, "shared")).skill_id == "shared"
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    finally:
        await conn.close()
    assert await first.terminate() == 0
    assert await second.terminate() == 0


async def test_embedded_default_keeps_definitions_across_restarts(
    serve, embedded_data_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    data = embedded_data_dir
    served = await serve(SKILLSVC_DATA_DIR=str(data))
    await served.wait_serving()
    await _create(served.address, "kept")
    assert await served.terminate() == 0
    assert (data / "postgres" / "PG_VERSION").exists()
    assert (data / "store" / "packages").is_dir()
    again = await serve(SKILLSVC_DATA_DIR=str(data))
    await again.wait_serving()
    assert (await _get(again.address, "kept")).description == "d"
    assert await again.terminate() == 0


async def test_metrics_endpoint_serves_prometheus_text(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    served = await serve(SKILLSVC_DATABASE_URL=db_url, SKILLSVC_METRICS_ADDR=f"127.0.0.1:{port}")
    await served.wait_serving()
    await _create(served.address, "metered")
    body = await asyncio.to_thread(
        lambda: (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
    )
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateSkillDefinition",'
        'grpc_service="skillsvc.v1.SkillService",grpc_type="unary"} 1.0'
    ) in body
    assert "skillsvc_healthy 1.0" in body
    assert await served.terminate() == 0


def test_bad_configuration_exits_2_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skillsvc.cli", "serve"],
        env=child_env(SKILLSVC_MAX_FILES="lots"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SKILLSVC_MAX_FILES" in result.stderr


def test_migrate_command_reports_the_schema_version(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skillsvc.cli", "migrate"],
        env=child_env(SKILLSVC_DATABASE_URL=db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"schema at version {load_migrations()[-1].version}" in result.stdout
