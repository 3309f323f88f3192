"""LocalBlobs: archives and kept bytes as files under the store root (the default)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from skillsvc.blobs import LocalBlobs
from skillsvc.errors import DataLoss, InvalidArgument, NotFound
from skillsvc.store import Store

from .conftest import INSTANCE, StagePackage

BAD_HEX = ["", "0" * 63, "0" * 65, "A" * 64, "g" * 64, "../" + "0" * 61, "0" * 63 + "\0"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def blobs(store: Store) -> LocalBlobs:
    return LocalBlobs(store.root)


async def test_put_keeps_todays_layout_read_only(
    store: Store, blobs: LocalBlobs, stage_package: StagePackage
) -> None:
    staged = stage_package()

    await blobs.put("archive", staged.sha256, staged.archive)
    await blobs.put("kept", staged.sha256, staged.archive)

    blob = store.root / "blobs" / "sha256" / staged.sha256
    kept = store.root / "kept" / "sha256" / staged.sha256
    assert blobs.path("archive", staged.sha256) == blob
    assert blobs.path("kept", staged.sha256) == kept
    for path in (blob, kept):
        assert path.read_bytes() == staged.archive_bytes
        assert _mode(path) == 0o444
    assert await blobs.digests("archive") == [staged.sha256]
    assert await blobs.digests("kept") == [staged.sha256]
    assert await blobs.size("archive", staged.sha256) == len(staged.archive_bytes)
    assert await blobs.exists("archive", staged.sha256)
    assert not blobs.shared


async def test_put_flushes_the_bytes_then_their_name(
    blobs: LocalBlobs, stage_package: StagePackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    staged = stage_package()

    await blobs.put("archive", staged.sha256, staged.archive)

    assert synced == [str(staged.archive), str(blobs.directory("archive"))]


async def test_put_of_known_bytes_keeps_the_stored_file(
    blobs: LocalBlobs, stage_package: StagePackage
) -> None:
    first = stage_package(archive_bytes=b"same archive")
    await blobs.put("archive", first.sha256, first.archive)
    inode = os.lstat(blobs.path("archive", first.sha256)).st_ino
    second = stage_package(archive_bytes=b"same archive")

    await blobs.put("archive", second.sha256, second.archive)

    assert os.lstat(blobs.path("archive", first.sha256)).st_ino == inode


async def test_put_copies_from_another_filesystem_path(
    blobs: LocalBlobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # restore uploads from a backup directory, maybe on another filesystem (EXDEV).
    source = tmp_path / "elsewhere"
    source.write_bytes(b"backup bytes")
    digest = hashlib.sha256(b"backup bytes").hexdigest()

    def no_link(*_args: object, **_kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    await blobs.put("archive", digest, source)

    assert blobs.path("archive", digest).read_bytes() == b"backup bytes"
    assert [p.name for p in blobs.directory("archive").iterdir()] == [digest]


async def test_fetch_and_stream_check_the_digest(
    store: Store, blobs: LocalBlobs, stage_package: StagePackage
) -> None:
    staged = stage_package(archive_bytes=b"x" * 3000)
    await blobs.put("archive", staged.sha256, staged.archive)
    dest = store.new_work_dir(INSTANCE, "fetch") / "archive"

    await blobs.fetch("archive", staged.sha256, dest)
    assert dest.read_bytes() == staged.archive_bytes
    pieces = [c async for c in blobs.stream("archive", staged.sha256, 1024)]
    assert [len(c) for c in pieces] == [1024, 1024, 952]
    assert await blobs.intact("archive", staged.sha256)

    # Damage at rest: same size, other bytes.
    blob = blobs.path("archive", staged.sha256)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"y" * 3000)
    dest.unlink()
    with pytest.raises(DataLoss) as info:
        await blobs.fetch("archive", staged.sha256, dest)
    assert info.value.reason == "BLOB_CORRUPT"
    assert not dest.exists()
    with pytest.raises(DataLoss):
        async for _ in blobs.stream("archive", staged.sha256):
            pass
    assert not await blobs.intact("archive", staged.sha256)


async def test_missing_objects(store: Store, blobs: LocalBlobs) -> None:
    digest = "0" * 64
    dest = store.new_work_dir(INSTANCE, "missing") / "archive"
    with pytest.raises(NotFound) as info:
        await blobs.fetch("kept", digest, dest)
    assert info.value.reason == "ARCHIVE_MISSING"
    assert not dest.exists()
    with pytest.raises(NotFound):
        async for _ in blobs.stream("archive", digest):
            pass
    assert await blobs.size("archive", digest) is None
    assert not await blobs.exists("archive", digest)
    assert not await blobs.intact("archive", digest)
    assert not await blobs.move(digest, "archive", "kept")


async def test_delete_and_move(blobs: LocalBlobs, stage_package: StagePackage) -> None:
    staged = stage_package()
    await blobs.put("archive", staged.sha256, staged.archive)

    assert await blobs.move(staged.sha256, "archive", "kept")
    assert await blobs.digests("archive") == []
    assert await blobs.digests("kept") == [staged.sha256]

    await blobs.delete("kept", staged.sha256)
    await blobs.delete("kept", staged.sha256)  # idempotent
    assert await blobs.digests("kept") == []


@pytest.mark.parametrize("digest", BAD_HEX)
async def test_bad_digests_are_refused(blobs: LocalBlobs, digest: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        blobs.path("archive", digest)
    assert info.value.violations[0].field == "sha256"
    with pytest.raises(InvalidArgument):
        await blobs.delete("kept", digest)


@pytest.mark.parametrize("same_filesystem", [True, False])
async def test_fetch_refuses_an_object_of_another_size_than_recorded(
    store: Store,
    blobs: LocalBlobs,
    stage_package: StagePackage,
    monkeypatch: pytest.MonkeyPatch,
    same_filesystem: bool,
) -> None:
    staged = stage_package(archive_bytes=b"x" * 3000)
    await blobs.put("archive", staged.sha256, staged.archive)
    blob = blobs.path("archive", staged.sha256)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"x" * 3000 + b"y" * 100_000)  # grown at rest
    if not same_filesystem:

        def no_link(*_args: object, **_kwargs: object) -> None:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", no_link)
    dest = store.new_work_dir(INSTANCE, "fetch") / "archive"

    with pytest.raises(DataLoss) as info:
        await blobs.fetch("archive", staged.sha256, dest, expected_size=3000)

    assert info.value.reason == "BLOB_CORRUPT"
    assert "not the 3000 recorded" in info.value.message
    assert not dest.exists()
    pieces = blobs.stream("archive", staged.sha256, expected_size=3000)
    with pytest.raises(DataLoss):
        await anext(pieces)  # before the first piece
