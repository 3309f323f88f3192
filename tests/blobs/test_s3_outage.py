"""The bucket goes away and comes back: installs fail fast, reads go on, health says so.

This test stops and restarts its own SeaweedFS (not the session's), by pid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from skillsvc.server import BLOB_STORE_HEALTH_NAME, App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status, reason
from tests.install.conftest import create_skill, install, install_and_wait
from tests.packages import skill_archive
from tests.s3 import SeaweedS3, running_seaweed

OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Connection refused, 2 retries with backoff: well under a second in practice; the
# bound leaves room for a loaded machine.
FAIL_FAST_SECONDS = 10.0


@pytest.fixture
def own_seaweed() -> Iterator[SeaweedS3]:
    with running_seaweed() as server:
        yield server


async def _health(chan: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(chan)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(reply.status)


async def _until(chan: grpc.aio.Channel, service: str, status: int, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while await _health(chan, service) != status:
            await asyncio.sleep(0.05)


async def test_a_bucket_outage_fails_installs_fast_while_reads_go_on(
    make_app: Any, own_seaweed: SeaweedS3, tmp_path: Path
) -> None:
    bucket = own_seaweed.new_bucket()
    app: App = await make_app(
        blob_store=bucket, blob_store_options=own_seaweed.options(), health_interval_seconds=0.2
    )
    # A second replica whose probe will not see the outage: its installs find out
    # when they store the archive.
    stale: App = await make_app(
        blob_store=bucket,
        blob_store_options=own_seaweed.options(),
        health_interval_seconds=3600,
        data_dir=tmp_path / "stale",
    )
    async with (
        grpc.aio.insecure_channel(app.address) as chan,
        grpc.aio.insecure_channel(stale.address) as stale_chan,
    ):
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "pdf-tools")
        first, _ = await install_and_wait(stub, "pdf-tools", skill_archive("pdf-tools", "1.0.0"))
        assert first.state == OK
        await _until(chan, BLOB_STORE_HEALTH_NAME, SERVING)

        own_seaweed.stop()

        await _until(chan, BLOB_STORE_HEALTH_NAME, NOT_SERVING)
        assert REGISTRY.get_sample_value("skill_blob_store_up") == 0
        assert await _health(chan, "") == SERVING  # readiness: reads still work
        # The probe said the bucket is down: the install is refused before its upload
        # is received, and leaves no operation.
        started = time.monotonic()
        error = await expect_status(
            install(stub, "pdf-tools", skill_archive("pdf-tools", "2.0.0")),
            grpc.StatusCode.UNAVAILABLE,
        )
        print(f"install with the bucket known down refused in {time.monotonic() - started:.2f} s")
        assert reason(error) == "BLOB_STORE_UNAVAILABLE"
        assert "blob store" in (error.details() or "")
        assert time.monotonic() - started < FAIL_FAST_SECONDS
        # Where the probe has not noticed yet, the install fails when it stores the
        # archive, fast, on the operation.
        stale_stub = skill_service_pb2_grpc.SkillServiceStub(stale_chan)
        started = time.monotonic()
        failed, _ = await install_and_wait(
            stale_stub, "pdf-tools", skill_archive("pdf-tools", "2.0.0")
        )
        elapsed = time.monotonic() - started
        print(f"install with the bucket down failed in {elapsed:.2f} s")
        assert failed.state == FAILED
        assert failed.error.code == grpc.StatusCode.UNAVAILABLE.value[0], failed.error
        assert "blob store" in failed.error.message
        assert elapsed < FAIL_FAST_SECONDS
        # Reads of installed packages go on: the catalog and the files on disk.
        package = await stub.GetPackage(
            skill_service_pb2.GetPackageRequest(skill_id="pdf-tools", version="")
        )
        assert package.version == "1.0.0"
        listed = await stub.ListPackages(
            skill_service_pb2.ListPackagesRequest(skill_id="pdf-tools")
        )
        assert {p.version for p in listed.packages} == {"1.0.0", "2.0.0"}
        current = app.store.root / "packages" / "pdf-tools" / "current" / "SKILL.md"
        assert "name: pdf-tools" in current.read_text()
        download = stub.DownloadPackage(
            skill_service_pb2.DownloadPackageRequest(skill_id="pdf-tools", version="1.0.0")
        )
        error = await expect_status(_drain(download), grpc.StatusCode.UNAVAILABLE)
        assert reason(error) == "BLOB_STORE_UNAVAILABLE"
        assert not await stale.check_blob_store()  # now its last probe says down too

        own_seaweed.start()

        await _until(chan, BLOB_STORE_HEALTH_NAME, SERVING)
        assert REGISTRY.get_sample_value("skill_blob_store_up") == 1
        again, _ = await install_and_wait(stub, "pdf-tools", skill_archive("pdf-tools", "2.0.0"))
        assert again.state == OK, again.error
        download = stub.DownloadPackage(
            skill_service_pb2.DownloadPackageRequest(skill_id="pdf-tools", version="2.0.0")
        )
        assert await _drain(download) == skill_archive("pdf-tools", "2.0.0")
        # Back before its next probe: an install probes again and goes ahead.
        assert stale.blobs.down
        final, _ = await install_and_wait(
            stale_stub, "pdf-tools", skill_archive("pdf-tools", "2.1.0")
        )
        assert final.state == OK, final.error


async def _drain(call: Any) -> bytes:
    return b"".join([m.chunk async for m in call])
