"""SIGTERM while uploads trickle in, and kill -9 after acceptance (issue 10, findings 1, 3).

Real ``skillsvc serve`` processes against the test's database; uploads are held
half-sent by the test so the signal lands while they are arriving.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.install.conftest import (
    ArchiveServer,
    Stub,
    create_skill,
    events,
    install,
    install_url,
    wait_for_stage,
)
from tests.install.faults import Trickle, operations, poll
from tests.packages import skill_archive
from tests.processes import child_env

S = resources_pb2.InstallStage
OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED


async def _fsck(env: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skillsvc.cli",
        "fsck",
        "--json",
        env=child_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    report: dict[str, Any] = json.loads(out)
    assert proc.returncode == 0, (report, err.decode())
    return report


async def _get(stub: Stub, operation_id: str) -> resources_pb2.Operation:
    return await stub.GetOperation(skill_service_pb2.GetOperationRequest(operation_id=operation_id))


async def _count_receiving(stub: Stub, skill_id: str, count: int) -> bool:
    ops = await operations(stub, skill_id)
    return sum(op.stage == S.Value("INSTALL_STAGE_RECEIVING") for op in ops) >= count


async def test_sigterm_lets_trickling_uploads_finish_with_their_installs(
    serve: Any, db_url: str, tmp_path: Path
) -> None:
    env = {
        "SKILLSVC_DATABASE_URL": db_url,
        # One process: the signal and the kill reach the process that serves.
        "SKILLSVC_WORKERS": "1",
        "SKILLSVC_DATA_DIR": str(tmp_path / "long"),
        "SKILLSVC_SHUTDOWN_GRACE_SECONDS": "60",
    }
    served = await serve(**env)
    await served.wait_serving()
    async with grpc.aio.insecure_channel(served.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "rolling")
        uploads = [Trickle(stub, "rolling", skill_archive("rolling", f"1.0.{i}")) for i in range(3)]
        await poll(lambda: _count_receiving(stub, "rolling", 3), what="three uploads arriving")
        served.proc.send_signal(signal.SIGTERM)
        # The process keeps receiving what it accepted: send the rest now.
        await poll(lambda: _staging_alive(tmp_path / "long", 3), what="staging kept after SIGTERM")
        for upload in uploads:
            upload.release()
        accepted = [await upload.outcome() for upload in uploads]
    assert all(isinstance(op, resources_pb2.Operation) for op in accepted), accepted
    async with asyncio.timeout(60):
        assert await served.proc.wait() == 0, served.log.read_text()

    again = await serve(**env)
    await again.wait_serving()
    async with grpc.aio.insecure_channel(again.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        for op in accepted:
            assert isinstance(op, resources_pb2.Operation)
            final = await _get(stub, op.operation_id)
            assert final.state == OK, final
    assert await again.terminate() == 0
    report = await _fsck(env)
    assert report["healthy"], report


async def _staging_alive(data_dir: Path, count: int) -> bool:
    # Three uploads' work directories still there, SIGTERM notwithstanding.
    return len(list((data_dir / "store" / "staging").glob("*/*/archive"))) >= count


async def test_sigterm_with_a_short_grace_interrupts_cleanly_and_keeps_whole_archives(
    serve: Any, db_url: str, archive_server: ArchiveServer, tmp_path: Path
) -> None:
    env = {
        "SKILLSVC_DATABASE_URL": db_url,
        # One process: the signal and the kill reach the process that serves.
        "SKILLSVC_WORKERS": "1",
        "SKILLSVC_DATA_DIR": str(tmp_path / "short"),
        "SKILLSVC_SHUTDOWN_GRACE_SECONDS": "1",
        "SKILLSVC_MAX_CONCURRENT_INSTALLS": "1",
        "SKILLSVC_URL_ALLOW_PRIVATE": "true",
    }
    served = await serve(**env)
    await served.wait_serving()
    archive_server.gate.clear()  # the one install slot stays busy downloading
    archive_server.files["/slow.tgz"] = skill_archive("short", "0.1.0")
    async with grpc.aio.insecure_channel(served.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "short")
        busy = await install_url(stub, "short", archive_server.url("/slow.tgz"))
        await wait_for_stage(stub, busy.operation_id, S.Value("INSTALL_STAGE_DOWNLOADING"))
        # Received whole, waiting for the slot: its archive must survive the shutdown.
        queued = await install(stub, "short", skill_archive("short", "1.0.0"))
        trickling = [Trickle(stub, "short", skill_archive("short", f"2.0.{i}")) for i in range(2)]
        await poll(lambda: _count_receiving(stub, "short", 2), what="two uploads arriving")
        served.proc.send_signal(signal.SIGTERM)
        outcomes = [await upload.outcome() for upload in trickling]
    assert all(isinstance(o, grpc.aio.AioRpcError) for o in outcomes), outcomes
    for outcome in outcomes:
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() != grpc.StatusCode.INTERNAL, outcome
    async with asyncio.timeout(60):
        assert await served.proc.wait() == 0, served.log.read_text()
    report = await _fsck(env)
    assert report["healthy"], report

    archive_server.gate.set()
    again = await serve(**env)
    await again.wait_serving()
    async with grpc.aio.insecure_channel(again.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        ops = await operations(stub, "short")
        assert ops and all(op.state == FAILED for op in ops), ops
        assert all("interrupted" in op.error.message for op in ops), ops
        # Whatever had arrived whole is retried from the kept bytes, with no upload.
        for op in (busy, queued):
            retried = await stub.Retry(skill_service_pb2.RetryRequest(operation_id=op.operation_id))
            assert (await events(stub, retried.operation_id))[-1].state == OK
    assert await again.terminate() == 0
    report = await _fsck(env)
    assert report["healthy"], report


async def test_kill_9_after_the_upload_arrived_then_retry_succeeds(
    serve: Any, db_url: str, archive_server: ArchiveServer, tmp_path: Path
) -> None:
    env = {
        "SKILLSVC_DATABASE_URL": db_url,
        # One process: the signal and the kill reach the process that serves.
        "SKILLSVC_WORKERS": "1",
        "SKILLSVC_DATA_DIR": str(tmp_path / "crash"),
        "SKILLSVC_MAX_CONCURRENT_INSTALLS": "1",
        "SKILLSVC_URL_ALLOW_PRIVATE": "true",
    }
    served = await serve(**env)
    await served.wait_serving()
    archive_server.gate.clear()
    archive_server.files["/hold.tgz"] = skill_archive("crashed", "0.1.0")
    async with grpc.aio.insecure_channel(served.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "crashed")
        busy = await install_url(stub, "crashed", archive_server.url("/hold.tgz"))
        await wait_for_stage(stub, busy.operation_id, S.Value("INSTALL_STAGE_DOWNLOADING"))
        accepted = await install(stub, "crashed", skill_archive("crashed", "1.0.0"))
    served.proc.send_signal(signal.SIGKILL)
    await served.proc.wait()

    archive_server.gate.set()
    again = await serve(**env)
    await again.wait_serving()
    async with grpc.aio.insecure_channel(again.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        failed = await _get(stub, accepted.operation_id)
        assert failed.state == FAILED and "interrupted" in failed.error.message, failed
        retried = await stub.Retry(
            skill_service_pb2.RetryRequest(operation_id=accepted.operation_id)
        )
        assert (await events(stub, retried.operation_id))[-1].state == OK
        package = await stub.GetPackage(
            skill_service_pb2.GetPackageRequest(skill_id="crashed", version="1.0.0")
        )
        assert package.state == resources_pb2.PACKAGE_STATE_READY
    assert await again.terminate() == 0
    report = await _fsck(env)
    assert report["healthy"], report
