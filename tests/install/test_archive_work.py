"""Archive work in worker processes: the same report as in a thread, and a dead worker
costs one archive, not the service."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import types
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from skillsvc.core.archive_work import ArchiveWork
from skillsvc.v1 import resources_pb2, skill_service_pb2_grpc
from skillsvc.validation import Limits, Manifest, validate_archive
from tests.install.conftest import create_skill, install_and_wait
from tests.packages import skill_archive

LIMITS = Limits(
    max_package_bytes=1 << 20, max_unpacked_bytes=1 << 20, max_files=100, max_file_bytes=1 << 20
)


def _archive(tmp_path: Path, name: str) -> tuple[Path, str]:
    data = skill_archive(name, "1.2.3")
    path = tmp_path / f"{name}.tgz"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_manifest_survives_pickling_with_its_read_only_metadata() -> None:
    manifest = Manifest(
        name="m",
        description="d",
        version="1.0.0",
        license="",
        compatibility="",
        allowed_tools=("Read",),
        metadata=types.MappingProxyType({"owner": "platform"}),
    )
    copy = pickle.loads(pickle.dumps(manifest))
    assert copy == manifest
    assert isinstance(copy.metadata, types.MappingProxyType)


def _workers() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children()
        if "spawn_main" in " ".join(p.cmdline())  # not the resource tracker
    ]


async def test_a_worker_process_gives_the_report_a_thread_gives(tmp_path: Path) -> None:
    archive, sha256 = _archive(tmp_path, "pooled")
    expected = validate_archive(
        archive, tmp_path / "by-thread", LIMITS, sha256=sha256, expected_name="pooled"
    )
    work = ArchiveWork(1)
    await work.start()
    try:
        assert len(_workers()) == 1  # started before the first archive
        report = await work.validate(
            archive,
            tmp_path / "by-process",
            LIMITS,
            sha256=sha256,
            expected_name="pooled",
            expected_version=None,
        )
    finally:
        await work.stop()
    assert report == expected and report.valid
    assert (tmp_path / "by-process" / "SKILL.md").read_bytes() == (
        tmp_path / "by-thread" / "SKILL.md"
    ).read_bytes()
    assert not _workers()  # stopped


async def test_a_killed_worker_fails_one_archive_and_is_replaced(tmp_path: Path) -> None:
    """The archive goes to the process (its death fails it); the next gets a new one."""
    archive, sha256 = _archive(tmp_path, "killed")
    work = ArchiveWork(1)
    await work.start()
    try:
        (worker,) = _workers()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        with pytest.raises(BrokenExecutor):
            await work.validate(
                archive,
                tmp_path / "first",
                LIMITS,
                sha256=sha256,
                expected_name="killed",
                expected_version=None,
            )
        report = await work.validate(
            archive,
            tmp_path / "second",
            LIMITS,
            sha256=sha256,
            expected_name="killed",
            expected_version=None,
        )
        assert report.valid
        (replacement,) = _workers()
        assert replacement.pid != worker.pid
    finally:
        await work.stop()


async def test_a_server_with_archive_processes_installs_and_stops_them(make_app: Any) -> None:
    app = await make_app(archive_processes=1)
    (worker,) = _workers()
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "spawned")
        final, _ = await install_and_wait(stub, "spawned", skill_archive("spawned", "1.0.0"))
    assert final.state == resources_pb2.OPERATION_STATE_SUCCEEDED, final.error
    await app.stop(0)
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert not _workers()
