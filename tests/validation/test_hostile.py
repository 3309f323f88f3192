"""Hostile archives: each is refused with the right code, and nothing escapes dest.

The ``validate`` fixture asserts after every case that nothing outside dest changed and
that dest holds no link or special file.
"""

from __future__ import annotations

import io
import stat
import tarfile
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skillsvc.validation import Limits

from .builders import (
    GOOD_FILES,
    GOOD_SKILL_MD,
    RawMember,
    TarMember,
    ZipMember,
    deflate,
    gz,
    many_central_records,
    minimal_front_matter,
    raw_zip,
    skill_md,
    tar_bytes,
    tar_header,
    tar_of,
    with_zip64_end,
    zip_bytes,
    zip_of,
)
from .conftest import Validate

EVIL_SKILL_MD = skill_md(minimal_front_matter(name="evil-skill", description="Evil."))
GOOD = GOOD_SKILL_MD


@dataclass(frozen=True)
class Case:
    """A hostile archive and the error codes it must produce (at least)."""

    id: str
    build: Callable[[], bytes]
    codes: frozenset[str]
    limits: Limits | None = None
    kwargs: dict[str, str] = field(default_factory=dict)


def case(id: str, build: Callable[[], bytes], *codes: str, limits: Limits | None = None) -> Case:
    return Case(id, build, frozenset(codes), limits)


def tar_with(*members: TarMember, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    return tar_bytes([TarMember("SKILL.md", GOOD), *members], fmt=fmt)


def zip_with(*members: ZipMember) -> bytes:
    return zip_bytes([ZipMember("SKILL.md", GOOD), *members])


def raw_with(*members: RawMember) -> bytes:
    return raw_zip([RawMember(b"SKILL.md", GOOD), *members])


def tar_end_of_data(files: dict[str, bytes]) -> bytes:
    """A tar cut right after its last member's data: no end-of-archive blocks."""
    data = tar_of(files)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        last = archive.getmembers()[-1]
    return data[: last.offset_data + -(-last.size // 512) * 512]


def patched(data: bytes, at: int, replacement: bytes) -> bytes:
    """``data`` with the bytes at ``at`` overwritten."""
    at %= len(data)
    return data[:at] + replacement + data[at + len(replacement) :]


def damaged_second_header() -> bytes:
    data = bytearray(tar_of(GOOD_FILES))
    second = 512 + -(-len(GOOD) // 512) * 512
    data[second + 148 : second + 156] = b"0000000\0"  # wrong checksum
    return bytes(data)


def overlapping_zip() -> bytes:
    """Member a.txt's compressed span swallows member b.txt's local header and data."""
    return raw_with(
        RawMember(b"a.txt", b"first", compress_size=5 + 30 + 5 + 6, crc=0),
        RawMember(b"b.txt", b"second"),
    )


def shared_body_zip() -> bytes:
    """Two central entries (same name) pointing at one local header: the overlap bomb."""
    return raw_with(
        RawMember(b"big.txt", b"x" * 100),
        RawMember(b"big.txt", b"x" * 100, write_local=False, offset=30 + 8 + len(GOOD)),
    )


def no_dir_sentinel(path: str) -> Callable[[], bytes]:
    return lambda: tar_with(TarMember(path, b"evil"))


ABS_TARGET = f"/tmp/skillsvc-validation-{uuid.uuid4().hex}"

CASES: list[Case] = [
    # --- format detection -----------------------------------------------------------
    case("random-bytes", lambda: b"hello, this is not an archive" * 40, "UNSUPPORTED_FORMAT"),
    case("empty-file", lambda: b"", "UNSUPPORTED_FORMAT"),
    case("bzip2", lambda: b"BZh91AY&SY" + bytes(600), "UNSUPPORTED_FORMAT"),
    case("7z", lambda: b"7z\xbc\xaf\x27\x1c" + bytes(600), "UNSUPPORTED_FORMAT"),
    case("exe-prefixed-zip", lambda: b"MZ" + bytes(100) + zip_of(GOOD_FILES), "UNSUPPORTED_FORMAT"),
    case("gzip-of-text", lambda: gz(b"just some text, no tar here\n" * 100), "UNSUPPORTED_FORMAT"),
    case("gzip-of-short", lambda: gz(b"x"), "UNSUPPORTED_FORMAT"),
    # --- corruption -----------------------------------------------------------------
    case("zip-truncated-half", lambda: zip_of(GOOD_FILES)[:300], "CORRUPT_ARCHIVE"),
    case("zip-truncated-end", lambda: zip_of(GOOD_FILES)[:-1], "CORRUPT_ARCHIVE"),
    case("zip-bad-crc", lambda: raw_with(RawMember(b"a.txt", b"data", crc=1)), "CORRUPT_ARCHIVE"),
    case(
        "zip-bad-deflate",
        lambda: raw_with(
            RawMember(b"a.txt", b"\xff" * 20, method=zipfile.ZIP_DEFLATED, size=100, crc=0)
        ),
        "CORRUPT_ARCHIVE",
    ),
    case(
        "zip-name-mismatch",
        lambda: raw_with(RawMember(b"a.txt", b"a", local_name=b"b.txt")),
        "CORRUPT_ARCHIVE",
    ),
    case(
        "zip-name-mismatch-skill-md",
        lambda: raw_zip([RawMember(b"SKILL.md", EVIL_SKILL_MD, local_name=b"SKILL.mD")]),
        "CORRUPT_ARCHIVE",
    ),
    case("zip-overlap-partial", overlapping_zip, "CORRUPT_ARCHIVE"),
    case("zip-overlap-shared-body", shared_body_zip, "CORRUPT_ARCHIVE"),
    case(
        "zip-data-into-central-directory",
        lambda: raw_with(RawMember(b"a.txt", b"abc", compress_size=10_000)),
        "CORRUPT_ARCHIVE",
    ),
    case(
        "zip-bad-offset",
        lambda: raw_with(RawMember(b"a.txt", b"abc", offset=3)),
        "CORRUPT_ARCHIVE",
    ),
    case("tar-truncated-mid-data", lambda: tar_of(GOOD_FILES)[:700], "CORRUPT_ARCHIVE"),
    case("tar-truncated-mid-header", lambda: tar_of(GOOD_FILES)[:1100], "CORRUPT_ARCHIVE"),
    case(
        "tar-truncated-at-header-boundary",
        lambda: tar_end_of_data(GOOD_FILES),
        "CORRUPT_ARCHIVE",
    ),
    case("tar-damaged-second-header", damaged_second_header, "CORRUPT_ARCHIVE"),
    case("tgz-truncated", lambda: gz(tar_of(GOOD_FILES))[:-9], "CORRUPT_ARCHIVE"),
    case("tgz-truncated-half", lambda: gz(tar_of(GOOD_FILES))[:200], "CORRUPT_ARCHIVE"),
    case(
        "tgz-bad-crc",
        lambda: patched(gz(tar_of(GOOD_FILES)), -8, bytes(4)),
        "CORRUPT_ARCHIVE",
    ),
    case(
        "tgz-corrupt-body",
        lambda: patched(gz(tar_of(GOOD_FILES)), 40, b"\xff" * 30),
        "CORRUPT_ARCHIVE",
    ),
    case(
        "tgz-trailing-garbage",
        lambda: gz(tar_of(GOOD_FILES)) + b"garbage",
        "CORRUPT_ARCHIVE",
    ),
    case(
        "pax-header-over-1mib",
        lambda: tar_with(TarMember("a.txt", b"a", pax={"comment": "x" * (1 << 20)})),
        "CORRUPT_ARCHIVE",
    ),
    case(
        "gnu-longname-over-1mib",
        lambda: tar_with(TarMember("d/" * 600_000 + "f", b"f"), fmt=tarfile.GNU_FORMAT),
        "CORRUPT_ARCHIVE",
    ),
    # --- unsupported features -------------------------------------------------------
    case(
        "zip-encrypted",
        lambda: raw_with(RawMember(b"secret.txt", b"\x00" * 24, flags=0x1)),
        "UNSUPPORTED_FORMAT",
    ),
    case(
        "zip-bzip2-method",
        lambda: raw_with(RawMember(b"a.txt", b"BZh9" + bytes(20), method=12)),
        "UNSUPPORTED_FORMAT",
    ),
    case(
        "zip-aes-method",
        lambda: raw_with(RawMember(b"a.txt", bytes(30), method=99, flags=0x1)),
        "UNSUPPORTED_FORMAT",
    ),
    case(
        "tar-gnu-sparse",
        lambda: tar_with(TarMember("sparse.bin", type=tarfile.GNUTYPE_SPARSE)),
        "UNSUPPORTED_FORMAT",
    ),
    case(
        "tar-pax-sparse",
        lambda: tar_with(
            TarMember("sparse.bin", b"x", pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0"})
        ),
        "UNSUPPORTED_FORMAT",
    ),
    # --- traversal and absolute paths -----------------------------------------------
    case("zip-slip", lambda: zip_with(ZipMember("../evil", b"x")), "PATH_TRAVERSAL"),
    case("zip-slip-deep", lambda: zip_with(ZipMember("a/../../evil", b"x")), "PATH_TRAVERSAL"),
    case(
        "zip-slip-far",
        lambda: zip_with(ZipMember("../" * 12 + ABS_TARGET.lstrip("/"), b"x")),
        "PATH_TRAVERSAL",
    ),
    case(
        "zip-slip-onto-skill-md",
        lambda: zip_with(ZipMember("x/../SKILL.md", EVIL_SKILL_MD)),
        "PATH_TRAVERSAL",
    ),
    case("tar-slip", no_dir_sentinel("../evil"), "PATH_TRAVERSAL"),
    case("tar-slip-victim", no_dir_sentinel("../../../../../outside/victim.txt"), "PATH_TRAVERSAL"),
    case(
        "tar-pax-path-slip",
        lambda: tar_with(TarMember("harmless.txt", b"x", pax={"path": "../evil"})),
        "PATH_TRAVERSAL",
    ),
    case("tar-dir-slip", lambda: tar_with(TarMember("..", type=tarfile.DIRTYPE)), "PATH_TRAVERSAL"),
    case("zip-absolute", lambda: zip_with(ZipMember(ABS_TARGET, b"x")), "ABSOLUTE_PATH"),
    case("tar-absolute", no_dir_sentinel(ABS_TARGET), "ABSOLUTE_PATH"),
    case("tar-double-slash", no_dir_sentinel("//" + ABS_TARGET), "ABSOLUTE_PATH"),
    # --- links ------------------------------------------------------------------------
    case(
        "tar-symlink-then-write-through",
        lambda: tar_with(
            TarMember("link", type=tarfile.SYMTYPE, linkname=ABS_TARGET),
            TarMember("link/evil", b"evil"),
        ),
        "LINK_ENTRY",
        "DUPLICATE_ENTRY",
    ),
    case(
        "tar-relative-symlink-to-outside",
        lambda: tar_with(
            TarMember("out", type=tarfile.SYMTYPE, linkname="../../../../outside"),
            TarMember("out/victim.txt", b"overwritten"),
        ),
        "LINK_ENTRY",
        "DUPLICATE_ENTRY",
    ),
    case(
        "tar-symlink-over-existing-directory",
        lambda: tar_with(
            TarMember("dir/file", b"x"),
            TarMember("dir", type=tarfile.SYMTYPE, linkname=ABS_TARGET),
        ),
        "LINK_ENTRY",
        "DUPLICATE_ENTRY",
    ),
    case(
        "tar-hardlink-passwd",
        lambda: tar_with(TarMember("passwd", type=tarfile.LNKTYPE, linkname="/etc/passwd")),
        "LINK_ENTRY",
    ),
    case(
        "tar-hardlink-internal",
        lambda: tar_with(TarMember("copy.md", type=tarfile.LNKTYPE, linkname="SKILL.md")),
        "LINK_ENTRY",
    ),
    case(
        "tar-symlink-skill-md",
        lambda: tar_bytes([TarMember("SKILL.md", type=tarfile.SYMTYPE, linkname="/etc/passwd")]),
        "LINK_ENTRY",
        "MISSING_SKILL_MD",
    ),
    case(
        "zip-symlink-then-write-through",
        lambda: zip_with(
            ZipMember("link", b"/etc", mode=stat.S_IFLNK | 0o777),
            ZipMember("link/passwd", b"evil"),
        ),
        "LINK_ENTRY",
        "DUPLICATE_ENTRY",
    ),
    # --- special files ----------------------------------------------------------------
    case("tar-fifo", lambda: tar_with(TarMember("fifo", type=tarfile.FIFOTYPE)), "SPECIAL_FILE"),
    case("tar-chardev", lambda: tar_with(TarMember("null", type=tarfile.CHRTYPE)), "SPECIAL_FILE"),
    case("tar-blockdev", lambda: tar_with(TarMember("sda", type=tarfile.BLKTYPE)), "SPECIAL_FILE"),
    case("tar-unknown-type", lambda: tar_with(TarMember("vol", type=b"V")), "SPECIAL_FILE"),
    case(
        "zip-fifo",
        lambda: zip_with(ZipMember("fifo", b"", mode=stat.S_IFIFO | 0o644)),
        "SPECIAL_FILE",
    ),
    case(
        "zip-socket",
        lambda: zip_with(ZipMember("sock", b"", mode=stat.S_IFSOCK | 0o644)),
        "SPECIAL_FILE",
    ),
    case(
        "zip-chardev",
        lambda: zip_with(ZipMember("null", b"", mode=stat.S_IFCHR | 0o644)),
        "SPECIAL_FILE",
    ),
    case(
        "zip-blockdev",
        lambda: zip_with(ZipMember("sda", b"", mode=stat.S_IFBLK | 0o644)),
        "SPECIAL_FILE",
    ),
    # --- duplicates and aliases -------------------------------------------------------
    case(
        "tar-second-skill-md",
        lambda: tar_with(TarMember("SKILL.md", EVIL_SKILL_MD)),
        "DUPLICATE_ENTRY",
    ),
    case(
        "tar-dot-slash-skill-md",
        lambda: tar_with(TarMember("./SKILL.md", EVIL_SKILL_MD)),
        "DUPLICATE_ENTRY",
    ),
    case(
        "tar-double-slash-alias",
        lambda: tar_with(TarMember(".//./SKILL.md", EVIL_SKILL_MD)),
        "DUPLICATE_ENTRY",
    ),
    case(
        "tar-case-alias",
        lambda: tar_with(TarMember("skill.md", EVIL_SKILL_MD)),
        "DUPLICATE_ENTRY",
    ),
    case(
        "zip-second-skill-md",
        lambda: raw_with(RawMember(b"SKILL.md", EVIL_SKILL_MD)),
        "DUPLICATE_ENTRY",
    ),
    case(
        "zip-dot-slash-skill-md",
        lambda: raw_with(RawMember(b"./SKILL.md", EVIL_SKILL_MD)),
        "DUPLICATE_ENTRY",
    ),
    case(
        "zip-case-alias",
        lambda: raw_with(RawMember(b"Skill.MD", EVIL_SKILL_MD)),
        "DUPLICATE_ENTRY",
    ),
    case(
        "nfc-nfd-alias",
        lambda: tar_with(
            TarMember("caf\u00e9.md", b"composed"), TarMember("cafe\u0301.md", b"decomposed")
        ),
        "DUPLICATE_ENTRY",
    ),
    case(
        "casefold-alias-sharp-s",
        lambda: zip_with(ZipMember("stra\u00dfe.md", b"1"), ZipMember("STRASSE.md", b"2")),
        "DUPLICATE_ENTRY",
    ),
    case(
        "file-then-directory",
        lambda: tar_with(TarMember("scripts", b"file"), TarMember("scripts/run.sh", b"x")),
        "DUPLICATE_ENTRY",
    ),
    case(
        "directory-then-file",
        lambda: tar_with(TarMember("scripts/run.sh", b"x"), TarMember("scripts", b"file")),
        "DUPLICATE_ENTRY",
    ),
    case(
        "directory-case-alias",
        lambda: tar_with(TarMember("Docs/a.md", b"a"), TarMember("docs/b.md", b"b")),
        "DUPLICATE_ENTRY",
    ),
    # --- bad names ----------------------------------------------------------------------
    case("control-char", no_dir_sentinel("bad\x01name"), "BAD_PATH"),
    case("escape-sequence", no_dir_sentinel("bad\x1b[31mname"), "BAD_PATH"),
    case("newline", no_dir_sentinel("bad\nname"), "BAD_PATH"),
    case("c1-control", no_dir_sentinel("bad\x85name"), "BAD_PATH"),
    case("line-separator", no_dir_sentinel("bad\u2028name"), "BAD_PATH"),
    case("bidi-override", no_dir_sentinel("evil\u202etxt.sh"), "BAD_PATH"),
    case("zip-nul", lambda: raw_with(RawMember(b"evil.sh\x00.txt", b"x")), "BAD_PATH"),
    case(
        "tar-pax-nul",
        lambda: tar_with(TarMember("x.txt", b"x", pax={"path": "evil.sh\x00.txt"})),
        "BAD_PATH",
    ),
    case("backslash", lambda: zip_with(ZipMember("..\\..\\evil", b"x")), "BAD_PATH"),
    case("drive-letter", lambda: zip_with(ZipMember("C:/Windows/evil", b"x")), "BAD_PATH"),
    case("drive-relative", lambda: zip_with(ZipMember("c:evil", b"x")), "BAD_PATH"),
    case("too-deep", no_dir_sentinel("d/" * 32 + "f"), "BAD_PATH"),
    case("too-long", no_dir_sentinel("n" * 200 + "/" + "m" * 60), "BAD_PATH"),
    case("too-long-unicode", no_dir_sentinel("\u00e9" * 128), "BAD_PATH"),
    case(
        "not-utf8",
        lambda: tar_with(TarMember("bad\udcffname", b"x"), fmt=tarfile.USTAR_FORMAT),
        "BAD_PATH",
    ),
    case(
        "zip-bad-cp437-roundtrip-ok-but-controls",
        lambda: raw_with(RawMember(b"a\x07b", b"x")),
        "BAD_PATH",
    ),
    case("file-with-trailing-slash", lambda: tar_with(TarMember("f/", b"x")), "BAD_PATH"),
    case("root-as-file", lambda: tar_with(TarMember(".", b"x")), "BAD_PATH"),
    # --- limits that need no big data --------------------------------------------------
    case(
        "too-large",
        lambda: zip_of(GOOD_FILES),
        "TOO_LARGE",
        limits=Limits(max_package_bytes=100),
    ),
    case(
        "too-many-files-zip",
        lambda: zip_of({**GOOD_FILES, **{f"f{i}": b"" for i in range(10)}}),
        "TOO_MANY_FILES",
        limits=Limits(max_files=5),
    ),
    case(
        "too-many-files-tar",
        lambda: tar_of({**GOOD_FILES, **{f"f{i}": b"" for i in range(10)}}),
        "TOO_MANY_FILES",
        limits=Limits(max_files=5),
    ),
    case(
        "zip-central-directory-flood",
        lambda: many_central_records(25_000),
        "TOO_MANY_FILES",
    ),
    case(
        "zip64-central-directory-flood",
        lambda: with_zip64_end(many_central_records(25_000)),
        "TOO_MANY_FILES",
    ),
    case(
        "too-many-entries-dirs",
        lambda: tar_bytes([TarMember(f"d{i}", type=tarfile.DIRTYPE) for i in range(200)]),
        "TOO_MANY_FILES",
        limits=Limits(max_files=5),
    ),
    case(
        "file-too-large-zip",
        lambda: zip_with(ZipMember("big", b"x" * 5000)),
        "FILE_TOO_LARGE",
        limits=Limits(max_file_bytes=4096),
    ),
    case(
        "file-too-large-tar",
        lambda: tar_with(TarMember("big", b"x" * 5000)),
        "FILE_TOO_LARGE",
        limits=Limits(max_file_bytes=4096),
    ),
    case(
        "file-too-large-zip-lying-size",
        lambda: raw_with(RawMember(b"big", b"x" * 5000, size=100)),
        "CORRUPT_ARCHIVE",
        limits=Limits(max_file_bytes=4096),
    ),
    case(
        "unpacked-too-large-zip",
        lambda: zip_with(*(ZipMember(f"f{i}", b"y" * 900) for i in range(5))),
        "UNPACKED_TOO_LARGE",
        limits=Limits(max_unpacked_bytes=3000),
    ),
    case(
        "unpacked-too-large-tgz",
        lambda: gz(tar_with(*(TarMember(f"f{i}", b"y" * 900) for i in range(5)))),
        "UNPACKED_TOO_LARGE",
        limits=Limits(max_unpacked_bytes=3000),
    ),
    case(
        "zip-ratio-declared",
        lambda: raw_with(
            RawMember(
                b"z",
                deflate(bytes(2 << 20)),
                method=zipfile.ZIP_DEFLATED,
                size=2 << 20,
            )
        ),
        "COMPRESSION_RATIO",
    ),
    case(
        "zip-ratio-zero-compressed-size",
        lambda: raw_with(RawMember(b"z", b"", size=2 << 20, compress_size=0)),
        "COMPRESSION_RATIO",
    ),
]


def test_every_code_has_a_case() -> None:
    from skillsvc.validation import Code

    covered = set().union(*(c.codes for c in CASES))
    manifest_codes = {
        "BAD_FRONTMATTER",
        "NAME_INVALID",
        "NAME_MISMATCH",
        "DESCRIPTION_INVALID",
        "VERSION_INVALID",
        "VERSION_MISMATCH",
        "UNKNOWN_FIELD",
    }
    # CHECKSUM_MISMATCH is the caller's: validate_archive trusts a digest it is given.
    assert {c.value for c in Code} - covered - manifest_codes == {"CHECKSUM_MISMATCH"}


@pytest.mark.parametrize("hostile", CASES, ids=[c.id for c in CASES])
def test_hostile_archive(validate: Validate, hostile: Case) -> None:
    started = time.perf_counter()
    out = validate(hostile.build(), hostile.limits, **hostile.kwargs)
    elapsed = time.perf_counter() - started
    report = out.report
    assert not report.valid
    assert hostile.codes <= out.errors, report.violations
    assert elapsed < 2, f"took {elapsed:.2f}s"
    assert not Path(ABS_TARGET).exists()
    for violation in report.violations:
        assert violation.path.isprintable() or violation.path == ""
        violation.path.encode("utf-8")  # valid UTF-8: fits a protobuf string
    # The manifest, if any, was parsed from the SKILL.md that is on disk.
    if report.manifest is not None:
        on_disk = (out.dest / "SKILL.md").read_bytes()
        assert f"name: {report.manifest.name}\n".encode() in on_disk
    # Every listed file is on disk with the recorded digest.
    for entry in report.files:
        path = out.dest / entry.path
        assert path.is_file() and not path.is_symlink()


@pytest.mark.parametrize(
    "build",
    [
        lambda: tar_with(TarMember("SKILL.md", EVIL_SKILL_MD)),
        lambda: tar_with(TarMember("./SKILL.md", EVIL_SKILL_MD)),
        lambda: tar_with(TarMember("skill.md", EVIL_SKILL_MD)),
        lambda: raw_with(RawMember(b"SKILL.md", EVIL_SKILL_MD)),
        lambda: raw_with(RawMember(b"./SKILL.md", EVIL_SKILL_MD)),
    ],
    ids=["tar-dup", "tar-dot", "tar-case", "zip-dup", "zip-dot"],
)
def test_second_skill_md_never_lands(validate: Validate, build: Callable[[], bytes]) -> None:
    out = validate(build())
    assert "DUPLICATE_ENTRY" in out.errors
    assert (out.dest / "SKILL.md").read_bytes() == GOOD
    assert sorted(p.name for p in out.dest.iterdir()) == ["SKILL.md"]
    assert out.report.manifest is not None
    assert out.report.manifest.name == "pdf-tools"


def test_alias_first_is_the_one_judged(validate: Validate) -> None:
    """Whichever copy comes first is both the one written and the one parsed."""
    out = validate(tar_bytes([TarMember("./SKILL.md", EVIL_SKILL_MD), TarMember("SKILL.md", GOOD)]))
    assert "DUPLICATE_ENTRY" in out.errors
    assert (out.dest / "SKILL.md").read_bytes() == EVIL_SKILL_MD
    assert out.report.manifest is not None
    assert out.report.manifest.name == "evil-skill"


def test_bad_paths_are_all_collected(validate: Validate) -> None:
    out = validate(
        tar_with(
            TarMember("../a", b"x"),
            TarMember("/b", b"x"),
            TarMember("c\x01", b"x"),
            TarMember("ok.txt", b"fine"),
            TarMember("d\\e", b"x"),
        )
    )
    codes = [v.code.value for v in out.report.violations]
    assert codes == ["PATH_TRAVERSAL", "ABSOLUTE_PATH", "BAD_PATH", "BAD_PATH"]
    assert [v.path for v in out.report.violations] == ["../a", "/b", "c\\x01", "d\\e"]
    assert (out.dest / "ok.txt").read_bytes() == b"fine"
    assert out.report.manifest is not None  # manifest still checked


def test_pax_digit_run_is_refused_fast(validate: Validate) -> None:
    """CVE-2024-6232: tarfile's pax regex is quadratic in digit runs on old 3.11s."""
    data = tar_with(TarMember("a.txt", b"a", pax={"comment": "1" * 200_000}))
    started = time.perf_counter()
    out = validate(data)
    assert time.perf_counter() - started < 1
    assert out.errors == {"CORRUPT_ARCHIVE"}


def test_malformed_pax_record(validate: Validate) -> None:
    header = tar_header("././@PaxHeader", 20, typeflag=b"x")
    record = b"99 path=evil\n".ljust(20, b"\0")
    body = header + record.ljust(512, b"\0")
    data = body + tar_of({"SKILL.md": GOOD})
    out = validate(data)
    assert out.errors == {"CORRUPT_ARCHIVE"}


def _with_size_field(data: bytes, header_at: int, field: bytes) -> bytes:
    """``data`` with the size field of the header at ``header_at`` replaced, checksum fixed."""
    block = bytearray(data[header_at : header_at + 512])
    block[124:136] = field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return data[:header_at] + bytes(block) + data[header_at + 512 :]


@pytest.mark.parametrize("size", [-1, -513, -(1 << 40)])
@pytest.mark.parametrize("member", [0, 1], ids=["first", "second"])
def test_negative_tar_size(validate: Validate, size: int, member: int) -> None:
    """Base-256 sizes can be negative: tarfile would loop back over the same header."""
    data = tar_of({"a.txt": b"a", "SKILL.md": GOOD})
    field = size.to_bytes(12, "big", signed=True)
    field = bytes([0xFF]) + field[1:]  # base-256 marker, still negative
    started = time.perf_counter()
    out = validate(_with_size_field(data, member * 1024, field))
    assert time.perf_counter() - started < 1
    assert out.errors == {"CORRUPT_ARCHIVE"}


def test_negative_pax_size(validate: Validate) -> None:
    data = tar_with(TarMember("a.txt", b"a", pax={"size": "-2048"}))
    out = validate(data)
    assert out.errors == {"CORRUPT_ARCHIVE"}
    pax = tar_bytes([TarMember("a.txt", b"a", pax={"comment": "c"})])
    out = validate(_with_size_field(pax, 0, b"\xff" * 12))
    assert out.errors == {"CORRUPT_ARCHIVE"}
