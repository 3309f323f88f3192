"""validate_archive: one archive file in, a report and an extracted skill tree out.

Order of work: refuse an oversized file before reading it; hash it (unless the caller
already did, while receiving it); detect the format from its first bytes; feed every
member through the extractor, which writes what it accepts under ``dest``; then, if
reading finished, strip a single top-level folder and check the manifest read back from
``dest``. Limits, corruption and unsupported formats stop the archive at once (an
``Abort``); problems with one member are recorded and the next member is read.
"""

from __future__ import annotations

import enum
import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Final

from ._entries import Abort
from ._extract import DestTree, Extractor
from ._manifest import read_manifest
from ._model import Code, FileEntry, Limits, Manifest, Report, Violation
from ._tar import BLOCK, looks_like_tar, read_gzip_tar, read_plain_tar
from ._zip import read_zip

_HASH_CHUNK: Final = 1024 * 1024
_ROOT_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Format(enum.Enum):
    ZIP = enum.auto()
    GZIP_TAR = enum.auto()
    TAR = enum.auto()


def _detect(head: bytes) -> _Format | None:
    """The archive format from its first bytes; the file name is never consulted."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _Format.ZIP
    if head.startswith(b"\x1f\x8b"):
        return _Format.GZIP_TAR
    if looks_like_tar(head):
        return _Format.TAR
    return None


def _hash(raw: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := raw.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def validate_archive(
    archive: Path,
    dest: Path,
    limits: Limits,
    *,
    sha256: str | None = None,
    expected_name: str | None = None,
    expected_version: str | None = None,
) -> Report:
    """Validate the skill package ``archive`` and extract it into ``dest``.

    ``dest`` must not exist; it is created with mode 0o700 and receives the skill root.
    Nothing is ever written outside it. When the report is not valid, ``dest`` may hold
    partial content, which the caller removes.

    ``sha256`` is the caller's digest of the archive, when it already has one (it is
    trusted, not re-checked); otherwise the file is hashed here. An archive over
    ``limits.max_package_bytes`` is refused without being read or hashed, so its report
    carries the caller's digest or an empty string.

    ``expected_name``, when given and non-empty, must match the manifest's name
    (NAME_MISMATCH); ``expected_version`` (the request's) must agree with a top-level
    ``version`` (VERSION_MISMATCH) and wins over ``metadata.version``.
    ``Manifest.version`` is the version the package resolves to, or empty when the
    service is to assign one (see ``_manifest._version``).

    Never raises because of the archive's content. Raises FileExistsError if ``dest``
    exists, and lets OSErrors about ``dest`` itself (ENOSPC, EACCES) propagate.
    """
    os.mkdir(dest, 0o700)
    os.chmod(dest, 0o700)  # mkdir's mode is filtered by the umask
    with archive.open("rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        if size > limits.max_package_bytes:
            violation = Violation(
                Code.TOO_LARGE,
                "",
                f"archive is {size} bytes (limit {limits.max_package_bytes})",
            )
            return Report((violation,), None, (sha256 or "").lower(), size, 0, 0, ())
        digest = sha256.lower() if sha256 else _hash(raw)
        raw.seek(0)
        head = raw.read(BLOCK)
        raw.seek(0)
        root_fd = os.open(dest, _ROOT_FLAGS)
        tree = DestTree(root_fd)
        try:
            extractor = Extractor(tree, limits)
            manifest = _extract(
                raw,
                _detect(head),
                extractor,
                limits=limits,
                expected_name=expected_name,
                expected_version=expected_version,
            )
        finally:
            tree.close()
            os.close(root_fd)
    files = tuple(sorted(extractor.files.values(), key=lambda entry: entry.path))
    return Report(
        violations=tuple(extractor.violations),
        manifest=manifest,
        sha256=digest,
        size_bytes=size,
        unpacked_bytes=extractor.unpacked,
        file_count=len(files),
        files=files,
    )


def _extract(
    raw: BinaryIO,
    archive_format: _Format | None,
    extractor: Extractor,
    *,
    limits: Limits,
    expected_name: str | None,
    expected_version: str | None,
) -> Manifest | None:
    """Read every member into ``dest``; then fix the layout and check the manifest."""
    try:
        if archive_format is _Format.ZIP:
            read_zip(raw, extractor, entry_cap=extractor.entry_cap, max_entries=limits.max_files)
        elif archive_format is _Format.GZIP_TAR:
            read_gzip_tar(raw, limits, extractor, entry_cap=extractor.entry_cap)
        elif archive_format is _Format.TAR:
            read_plain_tar(raw, extractor)
        else:
            raise Abort(Code.UNSUPPORTED_FORMAT, "not a zip, tar or tar.gz archive")
    except Abort as exc:
        # A stopped archive gets no layout fix-up and no manifest: the tree is partial,
        # and the report lists files by their paths in the archive.
        extractor.violate(exc.code, exc.path or extractor.current, exc.message)
        return None
    extractor.finish()
    top = extractor.strip_prefix()
    if top is not None:
        extractor.tree.hoist(top)
        extractor.files = {
            path: FileEntry(path, entry.size, entry.sha256, entry.executable)
            for entry in extractor.files.values()
            for path in [entry.path.removeprefix(top + "/")]
        }
    manifest, violations = read_manifest(
        extractor.tree.read_root_file,
        limits.max_manifest_bytes,
        expected_name=expected_name,
        expected_version=expected_version,
    )
    extractor.violations.extend(violations)
    return manifest
