"""S3Blobs against a real S3 server (SeaweedFS): layout, checks, errors, multipart."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from skillsvc.blobs import S3Blobs
from skillsvc.errors import DataLoss, InvalidArgument, NotFound, Unavailable
from tests.s3 import SeaweedS3

MiB = 1024 * 1024


def _raw(seaweed: SeaweedS3, url: str) -> S3Store:
    """The bucket itself, without the prefix: to see keys as an operator would."""
    bucket = url.removeprefix("s3://").partition("/")[0]
    return S3Store(bucket, config=seaweed.options(), client_options={"allow_http": True})


def _file(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def test_objects_live_under_the_prefix_in_the_local_layout(
    seaweed: SeaweedS3, s3_bucket: str, bucket: S3Blobs, tmp_path: Path
) -> None:
    source, digest = _file(tmp_path / "a", b"archive bytes")

    await bucket.put("archive", digest, source)
    await bucket.put("archive", digest, source)  # idempotent
    await bucket.put("kept", digest, source)

    keys = sorted(m["path"] for m in await obstore.list(_raw(seaweed, s3_bucket)).collect_async())
    assert keys == [f"skills/blobs/sha256/{digest}", f"skills/kept/sha256/{digest}"]
    assert source.read_bytes() == b"archive bytes"  # the caller's copy stays
    assert await bucket.digests("archive") == [digest]
    assert await bucket.digests("kept") == [digest]
    assert await bucket.size("archive", digest) == len(b"archive bytes")
    assert bucket.shared
    assert bucket.location == s3_bucket


async def test_fetch_stream_move_delete(bucket: S3Blobs, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 5)
    source, digest = _file(tmp_path / "a", data)
    await bucket.put("archive", digest, source)

    dest = tmp_path / "fetched"
    await bucket.fetch("archive", digest, dest)
    assert dest.read_bytes() == data
    pieces = [c async for c in bucket.stream("archive", digest, MiB)]
    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= MiB
    assert await bucket.intact("archive", digest)

    assert await bucket.move(digest, "archive", "kept")
    assert await bucket.digests("archive") == []
    assert await bucket.exists("kept", digest)
    await bucket.delete("kept", digest)
    await bucket.delete("kept", digest)  # missing is fine
    assert not await bucket.exists("kept", digest)
    assert not await bucket.move(digest, "archive", "kept")


async def test_missing_and_damaged_objects_are_domain_errors(
    seaweed: SeaweedS3, s3_bucket: str, bucket: S3Blobs, tmp_path: Path
) -> None:
    source, digest = _file(tmp_path / "a", b"the real bytes")
    dest = tmp_path / "fetched"
    with pytest.raises(NotFound) as missing:
        await bucket.fetch("archive", digest, dest)
    assert missing.value.reason == "ARCHIVE_MISSING"
    assert not dest.exists()

    await bucket.put("archive", digest, source)
    # Damage at rest: other bytes under the archive's name.
    await obstore.put_async(_raw(seaweed, s3_bucket), f"skills/blobs/sha256/{digest}", b"forged")
    with pytest.raises(DataLoss) as damaged:
        await bucket.fetch("archive", digest, dest)
    assert damaged.value.reason == "BLOB_CORRUPT"
    assert not dest.exists()
    with pytest.raises(DataLoss):
        async for _ in bucket.stream("archive", digest):
            pass
    assert not await bucket.intact("archive", digest)


async def test_wrong_credentials_are_unavailable_not_permission_denied(
    seaweed: SeaweedS3, s3_bucket: str
) -> None:
    wrong = S3Blobs(s3_bucket, {**seaweed.options(), "secret_access_key": "not-the-secret"})
    with pytest.raises(Unavailable) as info:
        await wrong.probe()
    assert info.value.reason == "BLOB_STORE_UNAVAILABLE"
    assert "access denied" in info.value.message


async def test_a_missing_bucket_fails_the_probe(seaweed: SeaweedS3) -> None:
    with pytest.raises(Unavailable):
        await S3Blobs("s3://no-such-bucket-here/x", seaweed.options()).probe()


async def test_an_unreachable_endpoint_fails_within_seconds(seaweed: SeaweedS3) -> None:
    from tests.processes import free_port

    options = {**seaweed.options(), "endpoint": f"http://127.0.0.1:{free_port()}"}
    down = S3Blobs("s3://any/x", options)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await down.exists("archive", "0" * 64)
    assert time.monotonic() - started < 5


def test_bad_urls_are_refused() -> None:
    for url in ("s3://", "http://bucket/x", "s3://bucket/x?y=1"):
        with pytest.raises(InvalidArgument):
            S3Blobs(url)


# Run in a child process so that its peak RSS measures one upload and nothing else.
_UPLOAD = """
import asyncio, hashlib, json, resource, sys
from pathlib import Path
import obstore
from skillsvc.blobs import S3Blobs

async def main():
    url, options, path, digest = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    blobs = S3Blobs(url, options)
    await blobs.probe()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await blobs.put("archive", digest, path)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    meta = await obstore.head_async(blobs._store, blobs.key("archive", digest))
    print(json.dumps({"grew_kib": after - before, "e_tag": meta["e_tag"], "size": meta["size"]}))

asyncio.run(main())
"""


def test_a_large_upload_goes_multipart_in_bounded_memory(
    seaweed: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    size = 96 * MiB
    path = tmp_path / "large"
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _UPLOAD,
            s3_bucket,
            json.dumps(seaweed.options()),
            str(path),
            digest.hexdigest(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["size"] == size
    # A multipart upload's ETag is "<md5 of the parts' md5s>-<number of parts>".
    parts = int(result["e_tag"].strip('"').rpartition("-")[2])
    assert parts == size // (8 * MiB)
    # 2 parts of 8 MiB in flight, not the 96 MiB file (measured: no growth past the
    # start-up peak; reading the file whole grows it by about 45 MiB).
    assert result["grew_kib"] < 24 * 1024, result


async def test_put_replaces_other_bytes_of_the_same_size_and_skips_its_own(
    seaweed: SeaweedS3, s3_bucket: str, bucket: S3Blobs, tmp_path: Path
) -> None:
    source, digest = _file(tmp_path / "a", b"the real bytes")
    key = f"skills/blobs/sha256/{digest}"
    await obstore.put_async(_raw(seaweed, s3_bucket), key, b"forged bytes!!")  # same size

    await bucket.put("archive", digest, source)

    assert await bucket.intact("archive", digest)
    first = await obstore.head_async(_raw(seaweed, s3_bucket), key)
    await bucket.put("archive", digest, source)  # ours, whole: not sent again
    assert await obstore.head_async(_raw(seaweed, s3_bucket), key) == first


async def test_fetch_refuses_an_object_bigger_than_recorded_before_reading_it(
    seaweed: SeaweedS3, s3_bucket: str, bucket: S3Blobs, tmp_path: Path
) -> None:
    from prometheus_client import REGISTRY

    source, digest = _file(tmp_path / "a", b"the real bytes")
    await bucket.put("archive", digest, source)
    # A hostile or oversized object at the archive's key.
    huge = os.urandom(4 * MiB)
    await obstore.put_async(_raw(seaweed, s3_bucket), f"skills/blobs/sha256/{digest}", huge)
    read_before = (
        REGISTRY.get_sample_value("skill_blob_store_bytes_total", {"direction": "in"}) or 0.0
    )
    dest = tmp_path / "fetched"

    with pytest.raises(DataLoss) as info:
        await bucket.fetch("archive", digest, dest, expected_size=len(b"the real bytes"))

    assert info.value.reason == "BLOB_CORRUPT"
    assert not dest.exists()
    read = REGISTRY.get_sample_value("skill_blob_store_bytes_total", {"direction": "in"}) or 0.0
    assert read == read_before  # refused on its Content-Length, nothing streamed
