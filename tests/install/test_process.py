"""Install behaviour that needs real processes: kill -9 recovery, SIGTERM, memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import tarfile
from pathlib import Path

import asyncpg
import grpc

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.install.conftest import (
    ArchiveServer,
    create_skill,
    events,
    install_url,
    upload_messages,
    upload_spec,
    wait_for_stage,
)
from tests.packages import skill_archive, skill_md

S = resources_pb2.InstallStage
MiB = 1024 * 1024


async def test_kill_9_mid_install_then_restart_recovers(
    serve, db_url: str, archive_server: ArchiveServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env = {
        "SKILLSVC_DATABASE_URL": db_url,
        "SKILLSVC_DATA_DIR": str(tmp_path / "crash-data"),
        "SKILLSVC_URL_ALLOW_PRIVATE": "true",
    }
    archive_server.gate.clear()  # the download stops half-way
    archive_server.files["/big.tgz"] = skill_archive(
        "crashy", "1.0.0", extra={"blob.bin": os.urandom(MiB)}
    )
    first = await serve(**env)
    await first.wait_serving()
    async with grpc.aio.insecure_channel(first.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "crashy")
        op = await install_url(stub, "crashy", archive_server.url("/big.tgz"), version="1.0.0")
        await wait_for_stage(stub, op.operation_id, S.Value("INSTALL_STAGE_DOWNLOADING"))
    staging = tmp_path / "crash-data" / "store" / "staging"
    assert any(staging.glob("*/*")), "the install should be under way in staging"
    first.proc.send_signal(signal.SIGKILL)
    await first.proc.wait()

    second = await serve(**env)
    await second.wait_serving()
    async with grpc.aio.insecure_channel(second.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        final = await stub.GetOperation(
            skill_service_pb2.GetOperationRequest(operation_id=op.operation_id)
        )
        assert final.state == resources_pb2.OPERATION_STATE_FAILED
        assert final.error.code == grpc.StatusCode.ABORTED.value[0]
        assert "interrupted" in final.error.message
        # The interrupted version is free again, and nothing was left in staging.
        package = await stub.GetPackage(
            skill_service_pb2.GetPackageRequest(skill_id="crashy", version="1.0.0")
        )
        assert package.state == resources_pb2.PACKAGE_STATE_FAILED
        assert not any(staging.glob("*/*"))
        archive_server.gate.set()
        again = await install_url(stub, "crashy", archive_server.url("/big.tgz"), version="1.0.0")
        assert (await events(stub, again.operation_id))[-1].state == (
            resources_pb2.OPERATION_STATE_SUCCEEDED
        )
    assert await second.terminate() == 0


async def test_sigterm_lets_a_running_install_finish(
    serve, db_url: str, archive_server: ArchiveServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_URL_ALLOW_PRIVATE="true",
        SKILLSVC_SHUTDOWN_GRACE_SECONDS="30",
    )
    await served.wait_serving()
    archive_server.gate.clear()
    archive_server.files["/s.tgz"] = skill_archive("graceful", "1.0.0")
    async with grpc.aio.insecure_channel(served.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "graceful")
        op = await install_url(stub, "graceful", archive_server.url("/s.tgz"))
        await wait_for_stage(stub, op.operation_id, S.Value("INSTALL_STAGE_DOWNLOADING"))
    served.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    archive_server.gate.set()
    async with asyncio.timeout(60):
        assert await served.proc.wait() == 0
    conn = await asyncpg.connect(db_url)
    try:
        state = await conn.fetchval(
            "SELECT state FROM skill_install_logs WHERE operation_id = $1::uuid", op.operation_id
        )
    finally:
        await conn.close()
    assert state == "SUCCEEDED"


def _big_archive(size: int) -> bytes:
    """An uncompressed tar with one incompressible file of ``size`` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        md = skill_md("hefty", "1.0.0").encode()
        info = tarfile.TarInfo("SKILL.md")
        info.size = len(md)
        tf.addfile(info, io.BytesIO(md))
        info = tarfile.TarInfo("assets/data.bin")
        info.size = size
        tf.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


async def test_large_upload_keeps_server_memory_flat(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    served = await serve(SKILLSVC_DATABASE_URL=db_url)
    await served.wait_serving()
    data = _big_archive(90 * MiB)
    async with grpc.aio.insecure_channel(served.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "hefty")
        # Warm up with a small install so one-off allocations are not counted.
        small = skill_archive("hefty", "0.0.1")
        warm = await stub.Install(upload_messages(upload_spec("hefty", small), small))
        await events(stub, warm.operation_id)
        before = served.rss_peak_kib()
        op = await stub.Install(upload_messages(upload_spec("hefty", data), data, chunk=MiB))
        seen = await events(stub, op.operation_id)
        assert seen[-1].state == resources_pb2.OPERATION_STATE_SUCCEEDED, seen[-1].error
        growth_mib = (served.rss_peak_kib() - before) / 1024
        call = stub.DownloadPackage(
            skill_service_pb2.DownloadPackageRequest(skill_id="hefty", version="1.0.0")
        )
        digest = hashlib.sha256()
        async for message in call:
            digest.update(message.chunk)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert await served.terminate() == 0
    # 90 MiB went through; the server's peak grew by a small fraction of that.
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.1f} MiB for a 90 MiB upload"
