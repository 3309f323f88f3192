"""The service with SKILLSVC_BLOB_STORE=s3://... on a real SeaweedFS bucket.

Install, download, Retry, deletion, and the operator's commands (gc, fsck, backup,
restore, status) with the archives in the bucket instead of local ``blobs/``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import obstore
import pytest
from obstore.store import S3Store

from skillsvc.blobs import S3Blobs
from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status, reason
from tests.install.conftest import Stub, create_skill, install_and_wait
from tests.install.test_runbook import skillsvc
from tests.packages import skill_archive
from tests.s3 import SeaweedS3

OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _download(stub: Stub, skill_id: str, version: str) -> tuple[Any, bytes]:
    call = stub.DownloadPackage(
        skill_service_pb2.DownloadPackageRequest(skill_id=skill_id, version=version)
    )
    messages = [m async for m in call]
    return messages[0].info, b"".join(m.chunk for m in messages[1:])


def _env(app: App, seaweed: SeaweedS3) -> dict[str, str]:
    """What `skillsvc` commands need to reach the same bucket, the standard AWS way."""
    return {"SKILLSVC_BLOB_STORE": str(app.settings.blob_store), **seaweed.env()}


async def test_install_stores_the_archive_in_the_bucket_and_download_streams_it(
    app: App, stub: Stub, bucket: S3Blobs
) -> None:
    await create_skill(stub, "pdf-tools")
    # Bigger than one download chunk and than one S3 read, so both are pieced.
    data = skill_archive("pdf-tools", "1.0.0", extra={"big.bin": os.urandom(3_000_000)})

    final, _ = await install_and_wait(stub, "pdf-tools", data)

    assert final.state == OK, final.error
    assert await bucket.digests("archive") == [_digest(data)]
    assert list((app.store.root / "blobs" / "sha256").iterdir()) == []  # not local
    info, downloaded = await _download(stub, "pdf-tools", "1.0.0")
    assert info.sha256 == _digest(data)
    assert downloaded == data
    assert (app.store.root / "packages" / "pdf-tools" / "current" / "SKILL.md").is_file()


async def test_kept_bytes_of_a_failed_upload_go_to_the_bucket_and_retry_uses_them(
    make_app: Any, bucket: S3Blobs
) -> None:
    app: App = await make_app(max_versions_per_skill=1)
    async with grpc.aio.insecure_channel(app.address) as chan:
        stub = skill_service_pb2_grpc.SkillServiceStub(chan)
        await create_skill(stub, "pdf-tools")
        first, _ = await install_and_wait(
            stub, "pdf-tools", skill_archive("pdf-tools", "1.0.0"), activate=False
        )
        assert first.state == OK
        data = skill_archive("pdf-tools", "2.0.0")
        failed, _ = await install_and_wait(stub, "pdf-tools", data)
        assert failed.state == FAILED  # one version per skill: the quota is full
        assert await bucket.digests("kept") == [_digest(data)]
        assert list((app.store.root / "kept" / "sha256").iterdir()) == []
        await stub.DeletePackage(
            skill_service_pb2.DeletePackageRequest(skill_id="pdf-tools", version="1.0.0")
        )

        retried = await stub.Retry(skill_service_pb2.RetryRequest(operation_id=failed.operation_id))
        final = await _wait(stub, retried.operation_id)

        assert final.state == OK, final.error
        assert final.version == "2.0.0"
        assert await bucket.digests("archive") == [_digest(data)]
        _info, downloaded = await _download(stub, "pdf-tools", "2.0.0")
        assert downloaded == data


async def _wait(stub: Stub, operation_id: str) -> resources_pb2.Operation:
    call = stub.InstallProgress(skill_service_pb2.InstallProgressRequest(operation_id=operation_id))
    _ = [event async for event in call]
    return await stub.GetOperation(skill_service_pb2.GetOperationRequest(operation_id=operation_id))


async def test_deletion_removes_the_object_unless_shared(stub: Stub, bucket: S3Blobs) -> None:
    await create_skill(stub, "one")
    # The same bytes as two versions (no version in the manifest) share one object.
    same, other = skill_archive("one", None), skill_archive("one", "3.0.0")
    for version in ("1.0.0", "2.0.0"):
        final, _ = await install_and_wait(stub, "one", same, version=version, activate=False)
        assert final.state == OK, final.error
    assert (await install_and_wait(stub, "one", other))[0].state == OK
    assert await bucket.digests("archive") == sorted([_digest(same), _digest(other)])

    await stub.DeletePackage(
        skill_service_pb2.DeletePackageRequest(skill_id="one", version="1.0.0")
    )
    assert await bucket.digests("archive") == sorted([_digest(same), _digest(other)])
    await stub.DeletePackage(
        skill_service_pb2.DeletePackageRequest(skill_id="one", version="2.0.0")
    )
    assert await bucket.digests("archive") == [_digest(other)]
    await stub.DeleteSkillDefinition(
        skill_service_pb2.DeleteSkillDefinitionRequest(skill_id="one", force=True)
    )
    assert await bucket.digests("archive") == []


async def test_gc_removes_orphan_objects_and_expired_kept_bytes(
    app: App, stub: Stub, bucket: S3Blobs, seaweed: SeaweedS3, tmp_path: Path
) -> None:
    await create_skill(stub, "pdf-tools")
    data = skill_archive("pdf-tools", "1.0.0")
    assert (await install_and_wait(stub, "pdf-tools", data))[0].state == OK
    orphan, kept = tmp_path / "orphan", tmp_path / "kept"
    orphan.write_bytes(b"an archive no package owns")
    kept.write_bytes(b"kept bytes no operation wants")
    await bucket.put("archive", _digest(orphan.read_bytes()), orphan)
    await bucket.put("kept", _digest(kept.read_bytes()), kept)

    code, report = await skillsvc(app, "fsck", env=_env(app, seaweed))
    assert code == 1
    assert report["orphan_blobs"] == [_digest(orphan.read_bytes())]
    code, report = await skillsvc(app, "gc", env=_env(app, seaweed))

    assert code == 0, report
    # The unowned archive was just written (an install on another host in flight?):
    # left for the grace period.
    assert [(b["kind"], b["sha256"]) for b in report["blobs"]] == [
        ("kept", _digest(kept.read_bytes()))
    ]
    assert report["unowned_archives_in_grace"] == [_digest(orphan.read_bytes())]
    assert await bucket.exists("archive", _digest(orphan.read_bytes()))
    assert await bucket.digests("kept") == []
    # A retention shorter than the grace bounds it.
    code, report = await skillsvc(app, "gc", "--older-than", "0s", env=_env(app, seaweed))
    assert code == 0, report
    assert [(b["kind"], b["sha256"]) for b in report["blobs"]] == [
        ("blob", _digest(orphan.read_bytes()))
    ]
    assert await bucket.digests("archive") == [_digest(data)]  # the installed one stays


async def test_fsck_reports_an_object_overwritten_in_the_bucket(
    app: App, stub: Stub, seaweed: SeaweedS3, db: asyncpg.Connection
) -> None:
    await create_skill(stub, "pdf-tools")
    for version in ("1.0.0", "1.1.0"):
        data = skill_archive("pdf-tools", version)
        assert (await install_and_wait(stub, "pdf-tools", data))[0].state == OK
    old = await db.fetchval("SELECT sha256 FROM skill_packages WHERE version = '1.0.0'")
    bucket_name, _, prefix = str(app.settings.blob_store).removeprefix("s3://").partition("/")
    raw = S3Store(bucket_name, config=seaweed.options(), client_options={"allow_http": True})
    await obstore.put_async(raw, f"{prefix}/blobs/sha256/{old}", b"other bytes, same name")

    code, report = await skillsvc(app, "fsck", env=_env(app, seaweed))

    assert code == 1
    [damaged] = report["damaged_packages"]
    assert damaged["version"] == "1.0.0"
    assert damaged["problems"] == [
        f"archive blobs/sha256/{old} is damaged in the blob store ({app.settings.blob_store})"
    ]
    # Download refuses the damaged bytes at the end of the stream (DATA_LOSS).
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _download(stub, "pdf-tools", "1.0.0")
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    # --repair cannot recreate the bytes: the old version is retired, said so.
    code, report = await skillsvc(app, "fsck", "--repair", env=_env(app, seaweed))
    assert "cannot recreate the bytes" in report["damaged_packages"][0]["repair"]
    assert await db.fetchval("SELECT state FROM skill_packages WHERE version = '1.0.0'") == "FAILED"


async def test_backup_and_restore_copy_the_bucket(
    app: App,
    stub: Stub,
    seaweed: SeaweedS3,
    bucket: S3Blobs,
    tmp_path: Path,
    empty_db_url: str,
    make_app: Any,
) -> None:
    await create_skill(stub, "pdf-tools")
    data = skill_archive("pdf-tools", "1.0.0")
    assert (await install_and_wait(stub, "pdf-tools", data))[0].state == OK

    code, report = await skillsvc(app, "backup", str(tmp_path / "bk"), env=_env(app, seaweed))
    assert code == 0, report
    copied = tmp_path / "bk" / "store" / "blobs" / "sha256" / _digest(data)
    assert copied.read_bytes() == data

    target = seaweed.new_bucket()
    restored_dir = tmp_path / "restored"
    env = {
        **seaweed.env(),
        "SKILLSVC_BLOB_STORE": target,
        "SKILLSVC_DATABASE_URL": empty_db_url,
        "SKILLSVC_DATA_DIR": str(restored_dir),
    }
    code, report = await skillsvc(app, "restore", str(tmp_path / "bk"), env=env)
    assert code == 0, report
    assert await S3Blobs(target, seaweed.options()).digests("archive") == [_digest(data)]
    # The restored deployment serves the package from the new bucket.
    restored = await make_app(database_url=empty_db_url, data_dir=restored_dir, blob_store=target)
    async with grpc.aio.insecure_channel(restored.address) as chan:
        _info, downloaded = await _download(
            skill_service_pb2_grpc.SkillServiceStub(chan), "pdf-tools", "1.0.0"
        )
    assert downloaded == data


async def test_status_shows_the_blob_store(app: App, seaweed: SeaweedS3) -> None:
    code, report = await skillsvc(app, "status", env=_env(app, seaweed))
    assert code == 0
    assert report["blob_store"] == {
        "location": app.settings.blob_store,
        "shared": True,
        "up": True,
        "error": None,
    }
    code, report = await skillsvc(
        app, "status", env={**_env(app, seaweed), "AWS_SECRET_ACCESS_KEY": "wrong-secret-key"}
    )
    assert code == 0
    assert report["blob_store"]["up"] is False
    assert "access denied" in report["blob_store"]["error"]


async def test_download_of_a_missing_object_is_not_found(
    stub: Stub, bucket: S3Blobs, db: asyncpg.Connection
) -> None:
    await create_skill(stub, "pdf-tools")
    assert (await install_and_wait(stub, "pdf-tools", skill_archive("pdf-tools")))[0].state == OK
    digest = await db.fetchval("SELECT sha256 FROM skill_packages")
    await bucket.delete("archive", digest)

    error = await expect_status(_download(stub, "pdf-tools", "1.0.0"), grpc.StatusCode.NOT_FOUND)
    assert reason(error) == "ARCHIVE_MISSING"


async def test_an_archive_stored_for_a_ready_that_never_committed_goes_back_to_kept(
    app: App, stub: Stub, bucket: S3Blobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the archive is in the bucket, then placing the tree fails.
    from skillsvc.errors import Unavailable

    def failing_commit(*_args: object) -> None:
        raise Unavailable("injected: the file store failed while committing")

    await create_skill(stub, "pdf-tools")
    data = skill_archive("pdf-tools", "1.0.0")
    monkeypatch.setattr(app.store, "place_package", failing_commit)

    failed, _ = await install_and_wait(stub, "pdf-tools", data)

    assert failed.state == FAILED
    assert "injected" in failed.error.message
    # No orphan: the unowned archive became the kept bytes Retry uses.
    assert await bucket.digests("archive") == []
    assert await bucket.digests("kept") == [_digest(data)]
    monkeypatch.undo()
    retried = await stub.Retry(skill_service_pb2.RetryRequest(operation_id=failed.operation_id))
    assert (await _wait(stub, retried.operation_id)).state == OK
    assert await bucket.digests("archive") == [_digest(data)]


@pytest.mark.parametrize("damage", ["overwritten", "rotted"])
async def test_installing_the_same_bytes_again_heals_a_damaged_object(
    app: App, stub: Stub, seaweed: SeaweedS3, bucket: S3Blobs, db: asyncpg.Connection, damage: str
) -> None:
    await create_skill(stub, "pdf-tools")
    old = skill_archive("pdf-tools", "1.0.0")
    for data in (old, skill_archive("pdf-tools", "1.1.0")):
        assert (await install_and_wait(stub, "pdf-tools", data))[0].state == OK
    digest = _digest(old)
    bucket_name, _, prefix = str(app.settings.blob_store).removeprefix("s3://").partition("/")
    raw = S3Store(bucket_name, config=seaweed.options(), client_options={"allow_http": True})
    # Other bytes of the same size: written by something else ("overwritten": no
    # metadata of ours), or rotted under the metadata our put stored ("rotted").
    forged = bytes(b ^ 0xFF for b in old)
    attributes = {"sha256": digest} if damage == "rotted" else {}
    await obstore.put_async(raw, f"{prefix}/blobs/sha256/{digest}", forged, attributes=attributes)

    _code, report = await skillsvc(app, "fsck", "--repair", env=_env(app, seaweed))
    assert "damaged object was removed" in report["damaged_packages"][0]["repair"]
    assert await db.fetchval("SELECT state FROM skill_packages WHERE version = '1.0.0'") == "FAILED"

    again, _ = await install_and_wait(stub, "pdf-tools", old, activate=False)

    assert again.state == OK, again.error
    assert await bucket.intact("archive", digest)
    _info, downloaded = await _download(stub, "pdf-tools", "1.0.0")
    assert downloaded == old


async def test_backup_goes_on_past_a_damaged_object_and_lists_it(
    app: App, stub: Stub, seaweed: SeaweedS3, bucket: S3Blobs, tmp_path: Path
) -> None:
    await create_skill(stub, "pdf-tools")
    old, new = skill_archive("pdf-tools", "1.0.0"), skill_archive("pdf-tools", "1.1.0")
    for data in (old, new):
        assert (await install_and_wait(stub, "pdf-tools", data))[0].state == OK
    forged = tmp_path / "forged"
    forged.write_bytes(b"other bytes, same name")
    await obstore.put_async(bucket._store, bucket.key("archive", _digest(old)), forged)

    code, report = await skillsvc(app, "backup", str(tmp_path / "bk"), env=_env(app, seaweed))

    assert code == 1, report
    [damaged] = report["damaged_archives"]
    assert damaged["sha256"] == _digest(old)
    assert "damaged" in damaged["problem"]
    assert report["missing_from_store_copy"] == ["pdf-tools 1.0.0"]
    copied = tmp_path / "bk" / "store" / "blobs" / "sha256"
    assert sorted(p.name for p in copied.iterdir()) == [_digest(new)]
    assert (copied / _digest(new)).read_bytes() == new
    assert (tmp_path / "bk" / "database.dump").is_file()
    written = json.loads((tmp_path / "bk" / "backup.json").read_text())
    assert written["damaged_archives"] == report["damaged_archives"]


async def test_download_refuses_an_object_bigger_than_recorded_before_streaming_it(
    stub: Stub, bucket: S3Blobs, db: asyncpg.Connection
) -> None:
    from prometheus_client import REGISTRY

    await create_skill(stub, "pdf-tools")
    assert (await install_and_wait(stub, "pdf-tools", skill_archive("pdf-tools")))[0].state == OK
    digest = await db.fetchval("SELECT sha256 FROM skill_packages")
    await obstore.put_async(bucket._store, bucket.key("archive", digest), os.urandom(3_000_000))
    read_before = REGISTRY.get_sample_value("skill_blob_store_bytes_total", {"direction": "in"})

    call = stub.DownloadPackage(
        skill_service_pb2.DownloadPackageRequest(skill_id="pdf-tools", version="1.0.0")
    )
    received: list[Any] = []

    async def drain() -> None:
        async for message in call:
            received.append(message)

    error = await expect_status(drain(), grpc.StatusCode.DATA_LOSS)

    assert reason(error) == "BLOB_CORRUPT"
    assert received == []  # refused on its Content-Length, before the first message
    read = REGISTRY.get_sample_value("skill_blob_store_bytes_total", {"direction": "in"})
    assert read == read_before
