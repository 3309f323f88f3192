"""Admission and a full disk (issue 10, findings 7 and 8).

The full disk is real: the store lives on a small tmpfs the test mounts (root only;
skipped with the reason otherwise), filled to the byte count each stage needs.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from skillsvc.core import maintenance
from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from skillsvc.validation import Limits
from tests.helpers import expect_status, reason
from tests.install.conftest import Stub, create_skill, events, install, upload_spec
from tests.install.faults import Trickle, operations, poll
from tests.packages import skill_archive, skill_md

OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED
KiB = 1024
MiB = 1024 * KiB


async def test_uploads_in_progress_count_against_the_queue_limit(make_app: Any) -> None:
    app: App = await make_app(max_concurrent_installs=1, max_queued_installs=1)
    async with grpc.aio.insecure_channel(app.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "bounded")
        held = [Trickle(stub, "bounded", skill_archive("bounded", f"1.0.{i}")) for i in range(2)]
        await poll(lambda: _count_receiving(stub, "bounded", 2), what="two uploads to be accepted")
        # A third upload is refused from its spec alone: its bytes are never read
        # (this one never sends them).
        refused = Trickle(stub, "bounded", skill_archive("bounded", "1.0.9"))
        outcome = await refused.outcome()
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(outcome) == "INSTALL_QUEUE_FULL"
        # A failed upload gives its place back: a wrong size frees one at once.
        held[0].release()
        first = await held[0].outcome()
        assert isinstance(first, resources_pb2.Operation)
        assert (await events(stub, first.operation_id))[-1].state == OK
        # Its place is given back once its task has ended, just after DONE is sent.
        await poll(lambda: _true(app.installer._admitted == 1), what="the first place back")
        data = skill_archive("bounded", "1.0.5")
        bad = stub.Install(_messages(upload_spec("bounded", data + b"x"), data))
        await expect_status(bad, grpc.StatusCode.INVALID_ARGUMENT)
        held[1].release()
        second = await held[1].outcome()
        assert isinstance(second, resources_pb2.Operation)
        assert (await events(stub, second.operation_id))[-1].state == OK
        last = await install(stub, "bounded", skill_archive("bounded", "1.0.6"))
        assert (await events(stub, last.operation_id))[-1].state == OK
        await poll(lambda: _true(app.installer._admitted == 0), what="every place to be given back")


async def _true(value: bool) -> bool:
    return value


async def _messages(
    spec: skill_service_pb2.InstallSpec, data: bytes
) -> Any:  # AsyncIterator[InstallRequest]
    yield skill_service_pb2.InstallRequest(spec=spec)
    yield skill_service_pb2.InstallRequest(chunk=data)


async def _validate_messages(data: bytes) -> Any:  # AsyncIterator[ValidateRequest]
    spec = skill_service_pb2.ValidateSpec(
        skill_id="full", upload=skill_service_pb2.UploadSource(size_bytes=len(data))
    )
    yield skill_service_pb2.ValidateRequest(spec=spec)
    yield skill_service_pb2.ValidateRequest(chunk=data)


async def _count_receiving(stub: Stub, skill_id: str, count: int) -> bool:
    ops = await operations(stub, skill_id)
    return sum(op.stage == resources_pb2.INSTALL_STAGE_RECEIVING for op in ops) >= count


# -- a full disk ---------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: int, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the full-disk test: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(store_root: Path, leave: int) -> Path:
    """Fill the store's filesystem until ``leave`` bytes are free."""
    filler = store_root / "filler"
    free = os.statvfs(store_root).f_bavail * os.statvfs(store_root).f_frsize
    with filler.open("ab") as out:
        out.write(b"\0" * max(free - leave, 0))
    return filler


def _plain_tar(skill_id: str, version: str, payload: int) -> bytes:
    """An uncompressed tar: it needs as many bytes again to extract."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        md = skill_md(skill_id, version).encode()
        info = tarfile.TarInfo("SKILL.md")
        info.size = len(md)
        tf.addfile(info, io.BytesIO(md))
        info = tarfile.TarInfo("assets/data.bin")
        info.size = payload
        tf.addfile(info, io.BytesIO(os.urandom(payload)))
    return buf.getvalue()


def _metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


async def test_a_full_disk_at_each_stage_is_store_full(make_app: Any, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", 6 * MiB) as small:
        app: App = await make_app(data_dir=small, health_interval_seconds=0.1)
        root = app.store.root
        async with grpc.aio.insecure_channel(app.address) as chan:
            stub = skill_service_pb2_grpc.SkillServiceStub(chan)
            await create_skill(stub, "full")
            ok = await install(stub, "full", skill_archive("full", "1.0.0"))
            assert (await events(stub, ok.operation_id))[-1].state == OK
            # The gauges show the small filesystem (refreshed by the health probe).
            await poll(lambda: _gauges_near(6 * MiB), what="the store gauges to show the tmpfs")

            # Receiving: the archive does not fit.
            filler = _fill(root, 256 * KiB)
            big = _plain_tar("full", "2.0.0", 512 * KiB)
            err = await expect_status(
                install(stub, "full", big), grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            assert reason(err) == "STORE_FULL"
            await _assert_failed_store_full(stub, "2.0.0")
            assert await poll(lambda: _free_below(300 * KiB), what="the free gauge to drop")

            # Extracting: the archive fits, its contents do not.
            filler.unlink()
            _fill(root, 800 * KiB)
            accepted = await install(stub, "full", big)
            final = (await events(stub, accepted.operation_id))[-1]
            assert final.state == FAILED
            assert final.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], final.error
            await _assert_failed_store_full(stub, "2.0.0")
            # Validate extracts the same way, and says the same.
            err = await expect_status(
                stub.Validate(_validate_messages(big)),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            assert reason(err) == "STORE_FULL"

            # The current version is served throughout, and nothing partial remains.
            current = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id="full"))
            assert current.version == "1.0.0"
            assert (root / "packages" / "full" / "current" / "SKILL.md").is_file()
            assert not (root / "packages" / "full" / "2.0.0").exists()
            assert list((root / "staging" / app.installer.instance_id).iterdir()) == []
            report = await maintenance.fsck(
                app.db, app.store, repair=False, limits=Limits(), stale_after=60
            )
            assert not report["orphan_directories"] and not report["orphan_blobs"], report
        await app.stop(0)


async def _assert_failed_store_full(stub: Stub, version: str) -> None:
    latest = (await operations(stub, "full"))[0]
    assert latest.state == FAILED, latest
    assert latest.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], latest.error
    assert "no space left" in latest.error.message
    from google.rpc import error_details_pb2

    reasons = []
    for detail in latest.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reasons.append(info.reason)
    assert reasons == ["STORE_FULL"], latest.error


async def _gauges_near(total: int) -> bool:
    return abs(_metric("skill_store_total_bytes") - total) < 64 * KiB and (
        0 < _metric("skill_store_free_bytes") <= total
    )


async def _free_below(limit: int) -> bool:
    return _metric("skill_store_free_bytes") < limit


def _fill_inodes(root: Path, leave: int) -> None:
    """Use up the filesystem's inodes (empty files) until ``leave`` are free."""
    spare = root / "inodes"
    spare.mkdir()
    free = os.statvfs(root).f_favail
    for i in range(free - leave):
        (spare / str(i)).touch()


async def test_a_full_disk_while_committing_is_store_full(make_app: Any, tmp_path: Path) -> None:
    # Committing writes no data, only names: the filesystem runs out of inodes when
    # it creates the new skill's directory, after the archive became a blob.
    with _tmpfs(tmp_path / "inodes", 6 * MiB, "nr_inodes=400") as small:
        app: App = await make_app(data_dir=small, health_interval_seconds=600)
        root = app.store.root
        async with grpc.aio.insecure_channel(app.address) as chan:
            stub = skill_service_pb2_grpc.SkillServiceStub(chan)
            await create_skill(stub, "fresh")
            data = skill_archive("fresh", "1.0.0")
            # Staging needs a few inodes (work directory, archive, tree, files, the
            # extractor's own): leave one more each time until extraction fits and
            # the commit is what runs out. Every earlier attempt fails cleanly too.
            for leave in range(4, 16):
                _fill_inodes(root, leave)
                accepted = await install(stub, "fresh", data)
                seen = await events(stub, accepted.operation_id)
                assert seen[-1].state == FAILED
                assert seen[-1].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                if resources_pb2.INSTALL_STAGE_COMMITTING in [e.stage for e in seen]:
                    break
                shutil.rmtree(root / "inodes")
            else:
                raise AssertionError("the install never reached COMMITTING")
            latest = (await operations(stub, "fresh"))[0]
            assert "no space left" in latest.error.message
            # Nothing partial: no version directory, no blob; the bytes are kept.
            assert not (root / "packages" / "fresh").exists()
            assert list((root / "blobs" / "sha256").iterdir()) == []
            report = await maintenance.fsck(
                app.db, app.store, repair=False, limits=Limits(), stale_after=60
            )
            assert report["healthy"], report
            # With room again, Retry installs it from the kept bytes.
            shutil.rmtree(root / "inodes")
            retried = await stub.Retry(
                skill_service_pb2.RetryRequest(operation_id=accepted.operation_id)
            )
            assert (await events(stub, retried.operation_id))[-1].state == OK
        await app.stop(0)
