"""Tests of the Spooler: digests, limits, declared sizes, clean-up and memory use."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import tracemalloc
from pathlib import Path

import pytest

from skillsvc.errors import InvalidArgument, ResourceExhausted, SkillsvcError, Unavailable
from skillsvc.intake import Spooled, Spooler

KIB = 1024
MIB = 1024 * KIB


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    "sizes",
    [
        [],
        [1],
        [64 * KIB] * 40,  # several 1 MiB batches
        [3 * MIB, 7, 0, 100 * KIB],  # a chunk bigger than a batch, an empty chunk
    ],
    ids=["empty", "one-byte", "many-64k", "mixed"],
)
async def test_digest_and_size_are_exact(staging: Path, sizes: list[int]) -> None:
    chunks = [os.urandom(size) for size in sizes]
    data = b"".join(chunks)
    path = staging / "upload"
    spooler = Spooler(path, max_bytes=len(data), declared_size=len(data))
    for chunk in chunks:
        await spooler.write(chunk)
    assert spooler.bytes_done == len(data)
    spooled = await spooler.finish()

    assert spooled == Spooled(path, hashlib.sha256(data).hexdigest(), len(data))
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_mutable_chunks_are_copied(staging: Path) -> None:
    buffer = bytearray(b"a" * 10)
    spooler = Spooler(staging / "upload", max_bytes=100)
    await spooler.write(buffer)  # type: ignore[arg-type]  # bytes-like, as from some callers
    buffer[:] = b"b" * 10
    spooled = await spooler.finish()
    assert spooled.path.read_bytes() == b"a" * 10


async def test_existing_path_is_never_overwritten(staging: Path) -> None:
    path = staging / "upload"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        Spooler(path, max_bytes=10)
    assert path.read_bytes() == b"keep"


async def test_symlink_at_path_is_not_followed(staging: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (staging / "upload").symlink_to(victim)
    with pytest.raises(FileExistsError):
        Spooler(staging / "upload", max_bytes=10)
    assert not victim.exists()


async def test_exactly_max_bytes_is_accepted(staging: Path) -> None:
    spooler = Spooler(staging / "upload", max_bytes=100)
    await spooler.write(b"x" * 60)
    await spooler.write(b"x" * 40)
    assert (await spooler.finish()).size_bytes == 100


async def test_over_max_bytes_is_refused_before_writing(staging: Path) -> None:
    path = staging / "upload"
    spooler = Spooler(path, max_bytes=2 * MIB)
    await spooler.write(os.urandom(MIB + 5))  # flushed: over one batch
    with pytest.raises(ResourceExhausted) as caught:
        await spooler.write(os.urandom(MIB))
    assert caught.value.reason == "TOO_LARGE"
    assert caught.value.violations
    assert spooler.bytes_done == MIB + 5
    assert path.stat().st_size <= 2 * MIB

    # The spooler stays failed: neither more bytes nor a result.
    with pytest.raises(ResourceExhausted):
        await spooler.write(b"x")
    with pytest.raises(ResourceExhausted):
        await spooler.finish()

    await spooler.abort()
    assert not path.exists()


async def test_declared_size_over_max_is_refused_without_a_file(staging: Path) -> None:
    with pytest.raises(ResourceExhausted) as caught:
        Spooler(staging / "upload", max_bytes=10, declared_size=11)
    assert caught.value.reason == "TOO_LARGE"
    assert list(staging.iterdir()) == []


async def test_negative_declared_size_is_invalid(staging: Path) -> None:
    with pytest.raises(InvalidArgument):
        Spooler(staging / "upload", max_bytes=10, declared_size=-1)
    assert list(staging.iterdir()) == []


async def test_more_than_declared_is_a_size_mismatch(staging: Path) -> None:
    path = staging / "upload"
    async with Spooler(path, max_bytes=100, declared_size=10) as spooler:
        await spooler.write(b"x" * 8)
        with pytest.raises(InvalidArgument) as caught:
            await spooler.write(b"x" * 3)
        assert caught.value.reason == "SIZE_MISMATCH"
        assert caught.value.violations[0].field == "spec.upload.size_bytes"
        assert spooler.bytes_done == 8
    assert not path.exists()


async def test_less_than_declared_is_a_size_mismatch(staging: Path) -> None:
    path = staging / "upload"
    spooler = Spooler(path, max_bytes=100, declared_size=10)
    await spooler.write(b"x" * 9)
    with pytest.raises(InvalidArgument) as caught:
        await spooler.finish()
    assert caught.value.reason == "SIZE_MISMATCH"
    await spooler.abort()
    assert not path.exists()


async def test_abort_is_idempotent_and_closes_the_file(staging: Path) -> None:
    before = _open_fds()
    path = staging / "upload"
    spooler = Spooler(path, max_bytes=100)
    await spooler.write(b"data")
    await spooler.abort()
    await spooler.abort()
    assert not path.exists()
    assert _open_fds() == before
    with pytest.raises(RuntimeError):
        await spooler.write(b"more")


async def test_abort_after_finish_removes_the_file(staging: Path) -> None:
    spooler = Spooler(staging / "upload", max_bytes=100)
    spooled = await spooler.finish()
    assert spooled.path.exists()
    await spooler.abort()
    assert not spooled.path.exists()


async def test_context_manager_keeps_a_finished_file(staging: Path) -> None:
    async with Spooler(staging / "upload", max_bytes=100) as spooler:
        await spooler.write(b"data")
        spooled = await spooler.finish()
    assert spooled.path.read_bytes() == b"data"


async def test_context_manager_aborts_on_error_and_when_unfinished(staging: Path) -> None:
    path = staging / "upload"

    async def fail_midway() -> None:
        async with Spooler(path, max_bytes=100) as spooler:
            await spooler.write(b"data")
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await fail_midway()
    assert not path.exists()

    async with Spooler(path, max_bytes=100) as spooler:
        await spooler.write(b"data")
    assert not path.exists()


async def test_abort_after_a_cancelled_write_waits_for_the_worker(staging: Path) -> None:
    before = _open_fds()
    path = staging / "upload"
    spooler = Spooler(path, max_bytes=64 * MIB)
    # Big enough to be flushed at once, so the write is inside its worker thread.
    write = asyncio.create_task(spooler.write(os.urandom(32 * MIB)))
    await asyncio.sleep(0.001)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    await spooler.abort()
    assert not path.exists()
    assert _open_fds() == before


async def test_memory_stays_bounded_for_a_large_stream(staging: Path) -> None:
    """50 MiB in 64 KiB chunks: the traced peak stays near one batch, not the archive."""
    total = 50 * MIB
    chunk_size = 64 * KIB
    expected = hashlib.sha256()
    spooler = Spooler(staging / "upload", max_bytes=total)
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(total // chunk_size):
            chunk = os.urandom(chunk_size)  # a fresh object each time, as from the network
            expected.update(chunk)
            await spooler.write(chunk)
        spooled = await spooler.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spooled.size_bytes == total
    assert spooled.sha256 == expected.hexdigest()
    assert peak - baseline < 4 * MIB, f"peak grew by {(peak - baseline) / MIB:.1f} MiB"


@pytest.mark.parametrize(
    ("code", "error", "reason"),
    [
        (errno.ENOSPC, ResourceExhausted, "STORE_FULL"),
        (errno.EIO, Unavailable, "STORE_UNAVAILABLE"),
    ],
)
async def test_disk_errors_become_domain_errors(
    staging: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    error: type[SkillsvcError],
    reason: str,
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    path = staging / "upload"
    async with Spooler(path, max_bytes=100) as spooler:
        await spooler.write(b"data")
        with pytest.raises(error) as caught:
            await spooler.finish()
    assert caught.value.reason == reason
    assert not path.exists()
