"""Size, count and ratio limits: bombs stop early, in both formats, and boundaries hold."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from skillsvc.validation import Limits

from .builders import (
    GOOD_FILES,
    GOOD_SKILL_MD,
    TarMember,
    deflate_zeros,
    gz,
    tar_bytes,
    tar_header,
    tar_of,
    tgz_zero_bomb,
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
