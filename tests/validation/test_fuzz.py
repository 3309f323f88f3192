"""Property tests: mutated and randomly assembled archives never raise, never escape dest.

Examples are derandomized so that CI runs are reproducible; set ``derandomize=False`` in
``FUZZ`` locally to explore new inputs.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import tarfile
import unicodedata
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skillsvc.validation import Limits, Report, validate_archive

from .builders import (
    GOOD_FILES,
    TarMember,
    ZipMember,
    gz,
    minimal_front_matter,
    skill_md,
    tar_bytes,
    tar_of,
    zip_bytes,
    zip_of,
)
from .conftest import assert_no_links, snapshot

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        # Deliberate: the scratch layout is shared by every example of a test, and each
        # example starts from a fresh dest-N inside it.
        HealthCheck.function_scoped_fixture,
    ],
)

BASES: dict[str, bytes] = {
    "zip": zip_of(GOOD_FILES, mode=0o100755),
    "zip-folder": zip_of(GOOD_FILES, prefix="pkg/"),
    "tar": tar_of(GOOD_FILES, mode=0o755),
    "tar.gz": gz(tar_of(GOOD_FILES, prefix="pkg/")),
}
PLAIN_TAR = tar_of(GOOD_FILES)
# Limits small enough that mutated sizes hit them often.
LIMITS = Limits(max_file_bytes=64 * 1024, max_unpacked_bytes=256 * 1024, max_files=50)

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
)
mutations = st.lists(mutation, min_size=1, max_size=4)


def mutate(data: bytes, ops: list[tuple[str, int, object]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, arg in ops:
        if not buffer:
            break
        at = where % len(buffer)
        if kind == "flip":
            assert isinstance(arg, int)
            buffer[at] ^= 1 << arg
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "insert":
            assert isinstance(arg, bytes)
            buffer[at:at] = arg
        else:
            assert isinstance(arg, int)
            buffer[at] = arg
    return bytes(buffer)


class Scratch:
    """A reusable directory layout for one property test: outside/, w/x/y/dest-N."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.archive = root / "archive"
        (root / "outside").mkdir()
        (root / "outside" / "victim.txt").write_text("untouched")
        self.work = root / "w" / "x" / "y"
        self.work.mkdir(parents=True)
        self.count = 0

    def check(self, data: bytes, limits: Limits = LIMITS) -> Report:
        """Validate ``data``; assert the safety and report invariants; clean up dest."""
        self.count += 1
        dest = self.work / f"dest-{self.count}"
        self.archive.write_bytes(data)
        before = snapshot(self.root, skip=dest)
        try:
            report = validate_archive(self.archive, dest, limits, expected_name="pdf-tools")
            assert snapshot(self.root, skip=dest) == before
            assert_no_links(dest)
            _check_report(report, data, dest)
            return report
        finally:
            shutil.rmtree(dest, ignore_errors=True)


def _check_report(report: Report, data: bytes, dest: Path) -> None:
    assert report.file_count == len(report.files)
    assert report.unpacked_bytes >= sum(f.size for f in report.files)
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    folded = [unicodedata.normalize("NFC", f.path).casefold() for f in report.files]
    assert len(set(folded)) == len(folded)
    if report.valid:
        assert report.manifest is not None
        assert report.unpacked_bytes == sum(f.size for f in report.files)
        for entry in report.files:
            path = dest / entry.path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o755 if entry.executable else 0o644)


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    """Built once per test function (hypothesis runs all its examples inside one call)."""
    return Scratch(tmp_path)


@pytest.mark.parametrize("fmt", [*BASES, "tar-inside-gzip"])
@FUZZ
@given(ops=mutations)
def test_mutated_archive(scratch: Scratch, fmt: str, ops: list[tuple[str, int, object]]) -> None:
    if fmt == "tar-inside-gzip":
        # Mutate the tar, then compress: reaches the tar parser behind a valid gzip.
        scratch.check(gz(mutate(PLAIN_TAR, ops)))
    else:
        scratch.check(mutate(BASES[fmt], ops))


def test_unmutated_bases_are_valid(scratch: Scratch) -> None:
    for data in BASES.values():
        assert scratch.check(data).valid


_PART = st.sampled_from(
    [
        "SKILL.md",
        "skill.md",
        "a",
        "A",
        "b",
        ".",
        "..",
        "",
        "caf\u00e9",
        "cafe\u0301",
        "x\\y",
        "C:",
        "\x00",
        "\x1f",
        "__MACOSX",
        "pkg",
        "\udcff",
    ]
)
_NAME = st.lists(_PART, min_size=1, max_size=4).map("/".join) | st.sampled_from(["/etc/x", "//"])
_TAR_TYPES = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.REGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CHRTYPE,
    ]
)
_MODES = st.sampled_from([0o644, 0o755, 0o4755, 0o1777, 0o000])
_DATA = st.sampled_from([b"", b"x", skill_md(minimal_front_matter()), b"---\nname: [\n"])


@settings(FUZZ, max_examples=100)
@given(
    members=st.lists(
        st.builds(
            TarMember,
            name=_NAME,
            data=_DATA,
            type=_TAR_TYPES,
            mode=_MODES,
            linkname=st.sampled_from(["", "/etc/passwd", "../x", "a"]),
        ),
        max_size=8,
    ),
    compress=st.booleans(),
)
def test_random_tar_members(scratch: Scratch, members: list[TarMember], compress: bool) -> None:
    data = tar_bytes(members, fmt=tarfile.PAX_FORMAT)
    scratch.check(gz(data) if compress else data)


_ZIP_MODES = st.sampled_from(
    [None, 0o100644, 0o100755, 0o104755, 0o040755, 0o120777, 0o010644, 0o140644, 0o020644]
)


@settings(FUZZ, max_examples=100)
@given(
    members=st.lists(
        st.builds(
            ZipMember, name=_NAME.filter(lambda n: "\udcff" not in n), data=_DATA, mode=_ZIP_MODES
        ),
        max_size=8,
        # zipfile cuts names at NUL and warns about duplicates (an error under pytest).
        unique_by=lambda m: m.name.split("\x00")[0],
    )
)
def test_random_zip_members(scratch: Scratch, members: list[ZipMember]) -> None:
    scratch.check(zip_bytes(members))


@settings(FUZZ, max_examples=100)
@given(
    front_matter=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
)
def test_random_front_matter(scratch: Scratch, front_matter: str) -> None:
    content = b"---\n" + front_matter.encode("utf-8", "surrogatepass") + b"\n---\nbody\n"
    scratch.check(zip_of({"SKILL.md": content}))
