"""Well-formed packages in every format and layout extract completely and exactly."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from skillsvc.validation import Code, Limits, Severity, validate_archive

from .builders import (
    GOOD_FILES,
    TarMember,
    ZipMember,
    gz,
    minimal_front_matter,
    skill_md,
    tar_bytes,
    tar_of,
    with_zip64_end,
    zip_bytes,
    zip_of,
)
from .conftest import Validate

Builder = Callable[[dict[str, bytes], str], bytes]

FORMATS: dict[str, tuple[Builder, str]] = {
    "zip": (lambda files, prefix: zip_of(files, prefix=prefix), ".zip"),
    "skill": (lambda files, prefix: zip_of(files, prefix=prefix), ".skill"),
    "tar": (lambda files, prefix: tar_of(files, prefix=prefix), ".tar"),
    "tar.gz": (lambda files, prefix: gz(tar_of(files, prefix=prefix)), ".tar.gz"),
    # The name says zip, the content is tar.gz: detection goes by content.
    "tgz-named-zip": (lambda files, prefix: gz(tar_of(files, prefix=prefix)), ".zip"),
}


def tree(dest: Path) -> dict[str, bytes | None]:
    """Every path under ``dest``: file contents, or None for a directory."""
    return {
        str(path.relative_to(dest)): None if path.is_dir() else path.read_bytes()
        for path in sorted(dest.rglob("*"))
    }


@pytest.mark.parametrize("prefix", ["", "pdf-tools-1.2.3/"], ids=["root", "folder"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_good_package(validate: Validate, fmt: str, prefix: str) -> None:
    build, suffix = FORMATS[fmt]
    data = build(GOOD_FILES, prefix)
    out = validate(data, suffix=suffix, expected_name="pdf-tools", expected_version="1.2.3")
    report = out.report

    assert report.valid, report.violations
    assert report.violations == ()
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.size_bytes == len(data)
    assert report.file_count == len(GOOD_FILES)
    assert report.unpacked_bytes == sum(len(v) for v in GOOD_FILES.values())
    assert [f.path for f in report.files] == sorted(GOOD_FILES)
    for entry in report.files:
        assert entry.size == len(GOOD_FILES[entry.path])
        assert entry.sha256 == hashlib.sha256(GOOD_FILES[entry.path]).hexdigest()
        assert not entry.executable

    manifest = report.manifest
    assert manifest is not None
    assert manifest.name == "pdf-tools"
    assert manifest.description == "Fill, merge and split PDF files."
    assert manifest.version == "1.2.3"
    assert manifest.license == "Apache-2.0"
    assert manifest.compatibility == "Python 3.11+"
    assert manifest.allowed_tools == ("Bash", "Read")
    assert dict(manifest.metadata) == {"author": "platform-team"}

    # The skill root is dest itself: the top-level folder is gone.
    files = {k: v for k, v in tree(out.dest).items() if v is not None}
    assert files == GOOD_FILES
    assert set(tree(out.dest)) == set(GOOD_FILES) | {"scripts", "references", "assets"}
    assert stat.S_IMODE(out.dest.stat().st_mode) == 0o700
    for name in ("scripts", "references", "assets"):
        assert stat.S_IMODE((out.dest / name).stat().st_mode) == 0o755
    for name in GOOD_FILES:
        assert stat.S_IMODE((out.dest / name).stat().st_mode) == 0o644


def test_folder_named_like_a_child_is_stripped(validate: Validate) -> None:
    files = {**GOOD_FILES, "pkg/inner.txt": b"inner"}
    out = validate(zip_of(files, prefix="pkg/"))
    assert out.report.valid, out.report.violations
    assert (out.dest / "pkg" / "inner.txt").read_bytes() == b"inner"
    assert (out.dest / "SKILL.md").exists()


def test_folder_without_directory_entries_is_stripped(validate: Validate) -> None:
    out = validate(zip_bytes([ZipMember("top/" + k, v) for k, v in GOOD_FILES.items()]))
    assert out.report.valid, out.report.violations
    assert (out.dest / "SKILL.md").read_bytes() == GOOD_FILES["SKILL.md"]
    assert not (out.dest / "top").exists()


def test_two_top_level_folders_are_not_stripped(validate: Validate) -> None:
    out = validate(zip_of({"SKILL.md": GOOD_FILES["SKILL.md"], "a/x": b"x", "b/y": b"y"}))
    assert out.report.valid
    assert {f.path for f in out.report.files} == {"SKILL.md", "a/x", "b/y"}


def test_macosx_metadata_is_ignored(validate: Validate) -> None:
    members = [ZipMember("pkg/" + k, v) for k, v in GOOD_FILES.items()]
    members += [
        ZipMember("__MACOSX/pkg/._SKILL.md", b"\x00\x05\x16\x07AppleDouble"),
        ZipMember("__MACOSX/._pkg", b"\x00\x05\x16\x07"),
    ]
    out = validate(zip_bytes(members))
    assert out.report.valid, out.report.violations
    assert not (out.dest / "__MACOSX").exists()
    assert {f.path for f in out.report.files} == set(GOOD_FILES)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_exec_bit_kept_and_setuid_sticky_dropped(validate: Validate, fmt: str) -> None:
    modes = {
        "SKILL.md": 0o644,
        "run.sh": 0o755,
        "suid.sh": 0o4755,
        "sgid.sh": 0o2750,
        "sticky.txt": 0o1644,
        "owner-exec.sh": 0o700,
        "private.txt": 0o600,
    }
    contents = {name: GOOD_FILES["SKILL.md"] if name == "SKILL.md" else b"x" for name in modes}
    if fmt == "zip":
        data = zip_bytes(
            [ZipMember(n, contents[n], mode=stat.S_IFREG | m) for n, m in modes.items()]
        )
    else:
        data = tar_bytes([TarMember(n, contents[n], mode=m) for n, m in modes.items()])
    out = validate(data)
    assert out.report.valid, out.report.violations
    expected = {
        "SKILL.md": 0o644,
        "run.sh": 0o755,
        "suid.sh": 0o755,
        "sgid.sh": 0o755,
        "sticky.txt": 0o644,
        "owner-exec.sh": 0o755,
        "private.txt": 0o644,
    }
    for name, mode in expected.items():
        assert stat.S_IMODE((out.dest / name).stat().st_mode) == mode, name
    assert {f.path: f.executable for f in out.report.files} == {
        name: mode == 0o755 for name, mode in expected.items()
    }


def test_zip_from_dos_is_never_executable(validate: Validate) -> None:
    out = validate(zip_bytes([ZipMember(k, v, mode=None) for k, v in GOOD_FILES.items()]))
    assert out.report.valid
    assert not any(f.executable for f in out.report.files)


def test_manifest_json_replaces_missing_front_matter(validate: Validate) -> None:
    manifest = (
        b'{"name": "pdf-tools", "description": "From JSON.", "version": "2.0.0",'
        b' "allowed-tools": ["Bash", "Read"], "metadata": {"team": "x"}}'
    )
    out = validate(zip_of({"SKILL.md": b"# Just a body\n", "manifest.json": manifest}))
    assert out.report.valid, out.report.violations
    assert out.report.manifest is not None
    assert out.report.manifest.description == "From JSON."
    assert out.report.manifest.version == "2.0.0"
    assert out.report.manifest.allowed_tools == ("Bash", "Read")
    assert dict(out.report.manifest.metadata) == {"team": "x"}


def test_front_matter_wins_over_manifest_json(validate: Validate) -> None:
    manifest = b'{"name": "other", "description": "From JSON."}'
    out = validate(zip_of({"SKILL.md": GOOD_FILES["SKILL.md"], "manifest.json": manifest}))
    assert out.report.valid
    assert out.report.manifest is not None
    assert out.report.manifest.name == "pdf-tools"


def test_metadata_version(validate: Validate) -> None:
    front = minimal_front_matter(metadata='{version: "3.1.4", team: x}')
    out = validate(zip_of({"SKILL.md": skill_md(front)}), expected_version="3.1.4")
    assert out.report.valid, out.report.violations
    assert out.report.manifest is not None
    assert out.report.manifest.version == "3.1.4"


def test_expected_version_fills_a_missing_version(validate: Validate) -> None:
    data = zip_of({"SKILL.md": skill_md(minimal_front_matter())})
    out = validate(data, expected_version="0.9.0")
    assert out.report.valid
    assert out.report.manifest is not None
    assert out.report.manifest.version == "0.9.0"
    # With neither, the version is empty and that is the caller's business.
    out = validate(data)
    assert out.report.valid
    assert out.report.manifest is not None
    assert out.report.manifest.version == ""


def test_unknown_field_is_a_warning(validate: Validate) -> None:
    front = minimal_front_matter(homepage="https://example.com", tags="[a, b]")
    out = validate(zip_of({"SKILL.md": skill_md(front)}))
    assert out.report.valid
    warnings = [v for v in out.report.violations if v.code is Code.UNKNOWN_FIELD]
    assert [v.severity for v in warnings] == [Severity.WARNING, Severity.WARNING]
    assert "homepage" in warnings[0].message
    assert "tags" in warnings[1].message
    assert warnings[0].path == "SKILL.md"


def test_callers_digest_is_used(validate: Validate) -> None:
    out = validate(zip_of(GOOD_FILES), sha256="AB" * 32)
    assert out.report.sha256 == "ab" * 32


def test_long_skill_md_body_is_content(validate: Validate) -> None:
    body = GOOD_FILES["SKILL.md"] + b"more text\n" * 40_000  # ~400 KiB, over the cap
    out = validate(zip_of({**GOOD_FILES, "SKILL.md": body}))
    assert out.report.valid, out.report.violations
    assert (out.dest / "SKILL.md").read_bytes() == body


def test_dot_slash_names_and_root_entries(validate: Validate) -> None:
    members = [TarMember(".", type=tarfile.DIRTYPE, mode=0o755)]
    members += [TarMember("./" + k, v) for k, v in GOOD_FILES.items()]
    out = validate(tar_bytes(members))
    assert out.report.valid, out.report.violations
    assert {f.path for f in out.report.files} == set(GOOD_FILES)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_long_names(validate: Validate, fmt: int) -> None:
    long_dir = "d" * 90 + "/" + "\u00e9" * 60  # over ustar's 100 + 155 bytes, non-ASCII
    members = [TarMember("SKILL.md", GOOD_FILES["SKILL.md"]), TarMember(long_dir + "/f", b"f")]
    out = validate(tar_bytes(members, fmt=fmt))
    assert out.report.valid, out.report.violations
    assert (out.dest / long_dir / "f").read_bytes() == b"f"


def test_git_archive_style_global_pax_header(validate: Validate) -> None:
    buffer = io.BytesIO()
    commit = {"comment": "0123456789abcdef0123456789abcdef01234567"}
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers=commit
    ) as tf:
        for name, data in GOOD_FILES.items():
            info = tarfile.TarInfo("pdf-tools/" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = validate(gz(buffer.getvalue()))
    assert out.report.valid, out.report.violations
    assert {f.path for f in out.report.files} == set(GOOD_FILES)


def test_zip64_end_records(validate: Validate) -> None:
    out = validate(with_zip64_end(zip_of(GOOD_FILES, prefix="pkg/")))
    assert out.report.valid, out.report.violations
    assert {f.path for f in out.report.files} == set(GOOD_FILES)


def test_zip_with_archive_comment(validate: Validate) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = b"made by a zip tool " * 100
        for name, data in GOOD_FILES.items():
            archive.writestr(name, data)
    out = validate(buffer.getvalue())
    assert out.report.valid, out.report.violations


def test_multi_member_gzip(validate: Validate) -> None:
    data = tar_of(GOOD_FILES)
    out = validate(gz(data[:5000]) + gz(data[5000:]))
    assert out.report.valid, out.report.violations


def test_empty_zip_has_no_skill_md(validate: Validate) -> None:
    out = validate(b"PK\x05\x06" + bytes(18))
    assert out.errors == {"MISSING_SKILL_MD"}


def test_dest_must_not_exist(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_of(GOOD_FILES))
    (tmp_path / "dest").mkdir()
    with pytest.raises(FileExistsError):
        validate_archive(archive, tmp_path / "dest", Limits())


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_files"):
        Limits(max_files=0)
