"""Size, count and ratio limits: bombs stop early, in both formats, and boundaries hold."""

from __future__ import annotations

import io
import random
import stat
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from skillsvc.validation import Limits

from .builders import (
    GOOD_FILES,
    GOOD_SKILL_MD,
    TarMember,
    ZipMember,
    deflate_zeros,
    gz,
    tar_bytes,
    tar_header,
    tar_of,
    tgz_zero_bomb,
    zip_bytes,
    zip_of,
    zip_zero_bomb,
)
from .conftest import Validate

MIB = 1 << 20
GIB_IN_MIB = 1024


def disk_usage(dest: Path) -> int:
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def test_zip_gib_bomb_is_refused_before_decompressing(validate: Validate) -> None:
    data = zip_zero_bomb(GIB_IN_MIB)
    assert len(data) < 2 * MIB
    started = time.perf_counter()
    out = validate(data)
    assert time.perf_counter() - started < 1
    assert out.errors == {"COMPRESSION_RATIO"}
    assert out.report.violations[-1].path == "zeros.bin"
    assert disk_usage(out.dest) < 64 * 1024


def test_zip_bomb_with_lying_size_fails_its_crc(validate: Validate) -> None:
    # Declares 1 MiB of output for 1 GiB of deflate: zipfile stops at the declared size.
    data = zip_zero_bomb(GIB_IN_MIB).replace(
        (GIB_IN_MIB * MIB).to_bytes(4, "little"), MIB.to_bytes(4, "little")
    )
    out = validate(data)
    assert out.errors == {"CORRUPT_ARCHIVE"}
    assert disk_usage(out.dest) <= MIB + 64 * 1024


def test_tgz_gib_bomb_stops_on_ratio(validate: Validate) -> None:
    data = tgz_zero_bomb(GIB_IN_MIB)
    # Limits high enough that only the ratio can stop it.
    limits = Limits(max_file_bytes=2 << 30, max_unpacked_bytes=4 << 30)
    started = time.perf_counter()
    out = validate(data, limits)
    assert time.perf_counter() - started < 1
    assert out.errors == {"COMPRESSION_RATIO"}
    assert out.report.violations[-1].path == "zeros.bin"
    assert disk_usage(out.dest) < 2 * MIB


def test_tgz_gib_bomb_default_limits(validate: Validate) -> None:
    started = time.perf_counter()
    out = validate(tgz_zero_bomb(GIB_IN_MIB))
    assert time.perf_counter() - started < 1
    assert out.errors <= {"FILE_TOO_LARGE", "COMPRESSION_RATIO"}
    assert out.errors
    assert disk_usage(out.dest) < 2 * MIB


def test_tgz_many_small_zero_files_trip_the_stream_ratio(validate: Validate) -> None:
    """No single member reaches ratio_min_bytes; the stream as a whole does."""
    members = [TarMember("SKILL.md", GOOD_SKILL_MD)]
    members += [TarMember(f"z/{i:04}", bytes(64 * 1024)) for i in range(400)]
    data = gz(tar_bytes(members))
    out = validate(data)
    assert out.errors == {"COMPRESSION_RATIO"}


def test_tgz_bomb_in_a_refused_member_is_still_metered(validate: Validate) -> None:
    header = tar_header("../zeros", GIB_IN_MIB * MIB)
    data = b"".join(deflate_zeros(GIB_IN_MIB, prefix=header, wbits=31))
    limits = Limits(max_file_bytes=2 << 30, max_unpacked_bytes=4 << 30)
    started = time.perf_counter()
    out = validate(data, limits)
    assert time.perf_counter() - started < 1
    assert out.errors == {"PATH_TRAVERSAL", "COMPRESSION_RATIO"}


def test_tgz_bomb_after_the_end_of_the_tar(validate: Validate) -> None:
    """Decompressing to the gzip trailer (to check its CRC) is metered too."""
    data = b"".join(deflate_zeros(GIB_IN_MIB, prefix=tar_of(GOOD_FILES), wbits=31))
    started = time.perf_counter()
    out = validate(data)
    assert time.perf_counter() - started < 1
    assert out.errors == {"COMPRESSION_RATIO"}


def test_tgz_stream_ceiling_without_ratio(validate: Validate) -> None:
    header = tar_header("../zeros", 64 * MIB)
    data = b"".join(deflate_zeros(64, prefix=header, wbits=31))
    limits = Limits(max_files=1, max_unpacked_bytes=MIB, max_ratio=1_000_000)
    out = validate(data, limits)
    assert out.errors == {"PATH_TRAVERSAL", "UNPACKED_TOO_LARGE"}


def test_real_10001_files(validate: Validate) -> None:
    """Default limits, a real 10,001-file zip: refused from its central directory."""
    files = {"SKILL.md": GOOD_SKILL_MD} | {f"refs/{i:05}.md": b"x" for i in range(10_000)}
    started = time.perf_counter()
    out = validate(zip_of(files))
    assert time.perf_counter() - started < 10  # building and checking; ~0.5 s when idle
    assert out.errors == {"TOO_MANY_FILES"}
    assert out.report.file_count == 0  # nothing was written


def test_tar_too_many_files_stops_at_the_limit(validate: Validate) -> None:
    files = {"SKILL.md": GOOD_SKILL_MD} | {f"refs/{i:03}.md": b"x" for i in range(500)}
    out = validate(tar_of(files), Limits(max_files=300))
    assert out.errors == {"TOO_MANY_FILES"}
    assert out.report.file_count == 300
    assert out.report.violations[-1].path == "refs/299.md"


def test_macosx_entries_do_not_count_as_files(validate: Validate) -> None:
    files = {**GOOD_FILES} | {f"__MACOSX/._{name}": b"apple" for name in GOOD_FILES}
    out = validate(zip_of(files), Limits(max_files=len(GOOD_FILES)))
    assert out.report.valid, out.report.violations


def test_exactly_max_files_is_fine(validate: Validate) -> None:
    out = validate(zip_of(GOOD_FILES), Limits(max_files=len(GOOD_FILES)))
    assert out.report.valid, out.report.violations
    out = validate(zip_of(GOOD_FILES), Limits(max_files=len(GOOD_FILES) - 1))
    assert out.errors == {"TOO_MANY_FILES"}


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
def test_file_size_boundary(validate: Validate, fmt: str) -> None:
    def build(size: int) -> bytes:
        files = {"SKILL.md": GOOD_SKILL_MD, "blob": b"b" * size}
        return {"zip": zip_of, "tar": tar_of, "tar.gz": lambda f: gz(tar_of(f))}[fmt](files)

    limits = Limits(max_file_bytes=4096, max_unpacked_bytes=4096 + len(GOOD_SKILL_MD))
    assert validate(build(4096), limits).report.valid
    assert validate(build(4097), limits).errors == {"FILE_TOO_LARGE"}
    tight = Limits(max_unpacked_bytes=4095 + len(GOOD_SKILL_MD))
    assert validate(build(4096), tight).errors == {"UNPACKED_TOO_LARGE"}


def test_archive_size_boundary(validate: Validate) -> None:
    data = zip_of(GOOD_FILES)
    assert validate(data, Limits(max_package_bytes=len(data))).report.valid
    out = validate(data, Limits(max_package_bytes=len(data) - 1))
    assert out.errors == {"TOO_LARGE"}
    assert out.report.size_bytes == len(data)
    assert out.report.sha256 == ""  # not hashed: it was never read


def test_ratio_is_only_judged_past_ratio_min_bytes(validate: Validate) -> None:
    # 512 KiB of zeros compresses ~1000:1 but is under ratio_min_bytes.
    out = validate(zip_of({"SKILL.md": GOOD_SKILL_MD, "zeros": bytes(512 * 1024)}))
    assert out.report.valid, out.report.violations
    out = validate(gz(tar_of({"SKILL.md": GOOD_SKILL_MD, "zeros": bytes(512 * 1024)})))
    assert out.report.valid, out.report.violations


def test_zip_stored_member_ratio_is_one(validate: Validate) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("SKILL.md", GOOD_SKILL_MD)
        archive.writestr("zeros", bytes(2 * MIB))
    out = validate(buffer.getvalue())
    assert out.report.valid, out.report.violations


def test_pax_header_just_under_the_cap_is_fine(validate: Validate) -> None:
    members = [
        TarMember("SKILL.md", GOOD_SKILL_MD),
        TarMember("a.txt", b"a", pax={"comment": "x" * (512 * 1024)}),
    ]
    out = validate(tar_bytes(members, fmt=tarfile.PAX_FORMAT))
    assert out.report.valid, out.report.violations


# --- archive-wide amplification and directory entries (issue 11) -----------------------

_UNDER_FLOOR = MIB - 1024  # each member just under the per-entry ratio floor


def _zip_of_many_small_bombs(count: int) -> bytes:
    """``count`` deflated members of ~1 MiB of zeros: 0.6 MB for 600 (SPEC §3 case)."""
    from .builders import RawMember, deflate, raw_zip

    zeros = bytes(_UNDER_FLOOR)
    body, crc = deflate(zeros), zlib.crc32(zeros)
    members = [RawMember(b"SKILL.md", GOOD_SKILL_MD)]
    members += [
        RawMember(
            f"z/{i:04}.bin".encode(), body, method=zipfile.ZIP_DEFLATED, crc=crc, size=_UNDER_FLOOR
        )
        for i in range(count)
    ]
    return raw_zip(members)


def _tgz_of_many_small_bombs(count: int) -> bytes:
    """The same content as a tar.gz, built from deflate segments cut by full flushes.

    After a full flush a deflate stream refers to nothing before it, so the ~1 KB
    segment for one member's zeros is compressed once and repeated. The gzip trailer's
    CRC is left zero: validation stops long before it.
    """

    def segment(data: bytes) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)

    zeros = segment(bytes(_UNDER_FLOOR + (-_UNDER_FLOOR % 512)))
    parts = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]
    parts.append(segment(tar_bytes([TarMember("SKILL.md", GOOD_SKILL_MD)])[:-1024]))
    for i in range(count):
        parts += [segment(tar_header(f"z/{i:04}.bin", _UNDER_FLOOR)), zeros]
    parts.append(segment(bytes(1024)) + zlib.compressobj(9, zlib.DEFLATED, -15).flush())
    return b"".join(parts) + bytes(8)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_many_members_under_the_floor_trip_the_archive_ratio(validate: Validate, fmt: str) -> None:
    """600 members, each just under 1 MiB: refused after about 1 MiB, not 506 MiB."""
    build = _zip_of_many_small_bombs if fmt == "zip" else _tgz_of_many_small_bombs
    data = build(600)
    assert len(data) < MIB
    out = validate(data)
    assert out.errors == {"COMPRESSION_RATIO"}, out.report.violations
    assert "as a whole" in out.report.violations[-1].message or fmt == "tar.gz"
    # Writing stopped the moment the archive as a whole passed 200:1 past 1 MiB.
    assert disk_usage(out.dest) < 2 * MIB
    assert out.report.unpacked_bytes < 2 * MIB


def test_archive_ratio_is_not_judged_under_the_floor(validate: Validate) -> None:
    # Two members of ~512 KiB of zeros: 1000:1 each, but 1 MiB in all is not judged.
    out = validate(
        zip_of({"SKILL.md": GOOD_SKILL_MD, "a": bytes(500 * 1024), "b": bytes(500 * 1024)})
    )
    assert out.report.valid, out.report.violations


def test_archive_ratio_counts_compressed_bytes_of_every_member(validate: Validate) -> None:
    # 1.5 MiB of zeros beside 40 KiB of incompressible data: the archive as a whole stays
    # under 200:1, so it is accepted although the zeros alone would not be.
    noise = random.Random(11).randbytes(40 * 1024)
    files = {"SKILL.md": GOOD_SKILL_MD, "noise": noise}
    files |= {f"z{i}": bytes(512 * 1024) for i in range(3)}
    out = validate(zip_of(files))
    assert out.report.valid, out.report.violations


def _dir_members(count: int) -> list[TarMember]:
    return [TarMember(f"d{i:05}", type=tarfile.DIRTYPE, mode=0o755) for i in range(count)]


def test_directory_entries_count_and_cost_no_mkdir(validate: Validate) -> None:
    """20,100 directory entries in a 95 KB tar.gz: TOO_MANY_FILES at entry 10,001."""
    data = gz(tar_bytes(_dir_members(20_100)))
    assert len(data) < 200_000
    out = validate(data)
    assert out.errors == {"TOO_MANY_FILES"}
    assert out.report.violations[-1].path == "d10000"
    # Directory entries are only created once the archive has been read whole.
    assert list(out.dest.iterdir()) == []


def test_zip_directory_entries_count_from_the_central_directory(validate: Validate) -> None:
    members = [ZipMember("SKILL.md", GOOD_SKILL_MD)]
    members += [ZipMember(f"d{i}/", mode=stat.S_IFDIR | 0o755) for i in range(300)]
    out = validate(zip_bytes(members), Limits(max_files=300))
    assert out.errors == {"TOO_MANY_FILES"}
    assert out.report.file_count == 0
    assert validate(zip_bytes(members), Limits(max_files=301)).report.valid


def test_empty_directories_are_still_created(validate: Validate) -> None:
    members = [TarMember("SKILL.md", GOOD_SKILL_MD), TarMember("assets", type=tarfile.DIRTYPE)]
    members += [TarMember("refs/a/b", type=tarfile.DIRTYPE), TarMember("refs/x.md", b"x")]
    out = validate(tar_bytes(members))
    assert out.report.valid, out.report.violations
    assert (out.dest / "assets").is_dir() and (out.dest / "refs/a/b").is_dir()
    assert oct((out.dest / "refs/a/b").stat().st_mode & 0o777) == "0o755"
