"""Reads tar (plain or gzip) archives member by member.

tarfile is used only to parse headers and to open member streams: ``TarFile.next()``
one member at a time, never ``extractall``/``extract`` or extraction filters. Three of
its behaviours need guarding, done in :class:`_GuardedTarInfo`:

* it reads a pax or GNU long-name header into memory whole, whatever size it claims;
* on CPython before 3.11.10 / 3.12.6 its pax parser is quadratic on long digit runs
  (CVE-2024-6232), so a 64 KiB header can burn seconds of CPU;
* it expands GNU sparse members into zero-filled holes that no compressed byte pays for.

Headers over :data:`MAX_HEADER_BYTES` are CORRUPT_ARCHIVE, pax records are checked to be
well formed before tarfile sees them, and sparse members are UNSUPPORTED_FORMAT.

It is also lenient about where an archive ends: a damaged or truncated header after the
first one is silently taken as the end. We require the end to be a zero block, so a
truncated tar is CORRUPT_ARCHIVE rather than a silently shorter package.
"""

from __future__ import annotations

import functools
import re
import tarfile
from typing import Any, BinaryIO, Final, cast

from ._entries import READ_ERRORS, Abort, Entry, Kind, Readable, Sink, printable
from ._gzip import GzipStream
from ._model import Code, KiB, Limits, MiB

BLOCK: Final = 512
MAX_HEADER_BYTES: Final = 1 * MiB
# Longest run of digits allowed in a pax header: far above any real length, time or id
# field, far below what makes the vulnerable hdrcharset regex slow.
_MAX_DIGIT_RUN: Final = 64
_LONG_DIGITS: Final = re.compile(rb"[0-9]{%d}" % (_MAX_DIGIT_RUN + 1))
_ZERO_BLOCK: Final = bytes(BLOCK)

_FILE_TYPES: Final = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_SPECIAL_TYPES: Final = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


def looks_like_tar(block: bytes) -> bool:
    """Whether ``block`` is a plausible first tar header (or an empty archive)."""
    if len(block) < BLOCK:
        return False
    block = block[:BLOCK]
    if block == _ZERO_BLOCK or block[257:262] == b"ustar":
        return True
    # Pre-POSIX (v7) headers carry no magic; accept them when the checksum adds up,
    # counted both unsigned and signed as tarfile does.
    field = block[148:156].split(b"\0", 1)[0].strip()
    if not field or not all(48 <= c <= 55 for c in field):
        return False
    stored = int(field, 8)
    rest = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(rest)
    signed = sum(c - 256 if c > 127 else c for c in rest)
    return stored in (unsigned, signed)


def read_plain_tar(raw: BinaryIO, sink: Sink) -> None:
    """Feed every member of an uncompressed tar to ``sink``."""
    _read_tar(raw, sink)


def read_gzip_tar(raw: BinaryIO, limits: Limits, sink: Sink, *, entry_cap: int) -> None:
    """Feed every member of a gzip-compressed tar to ``sink``.

    Raises Abort(UNSUPPORTED_FORMAT) when the gzip data does not hold a tar archive.
    """
    stream = GzipStream(
        raw,
        # Header and padding blocks are not counted as unpacked bytes, but the
        # decompressed stream as a whole still needs a ceiling: skipped members (refused
        # names, links) are decompressed too, and would otherwise be free.
        max_out=limits.max_unpacked_bytes + entry_cap * 4 * KiB + 2 * MAX_HEADER_BYTES,
        max_ratio=limits.max_ratio,
        ratio_min=limits.ratio_min_bytes,
        window=MAX_HEADER_BYTES + 2 * BLOCK,
    )
    head = stream.read(BLOCK)
    if not looks_like_tar(head):
        raise Abort(Code.UNSUPPORTED_FORMAT, "gzip data does not contain a tar archive")
    stream.seek(0)
    _read_tar(stream, sink)
    stream.drain()


def _open(fileobj: BinaryIO | GzipStream) -> tarfile.TarFile:
    try:
        return tarfile.open(
            fileobj=cast(BinaryIO, fileobj),
            mode="r:",
            tarinfo=_GuardedTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except READ_ERRORS as exc:
        raise Abort(Code.CORRUPT_ARCHIVE, f"unreadable tar archive: {exc}") from None


def _read_tar(fileobj: BinaryIO | GzipStream, sink: Sink) -> None:
    with _open(fileobj) as tf:
        while True:
            try:
                info = tf.next()
            except READ_ERRORS as exc:
                raise Abort(Code.CORRUPT_ARCHIVE, f"bad tar header: {exc}") from None
            if info is None:
                break
            if info.size < 0:
                # Base-256 size fields can be negative; tarfile would step backwards and
                # read the same header again.
                raise Abort(Code.CORRUPT_ARCHIVE, "negative member size", info.name)
            sink.add(_entry(tf, info))
        _check_end(fileobj, tf.offset)


def _check_end(fileobj: BinaryIO | GzipStream, offset: int) -> None:
    try:
        fileobj.seek(offset)
        block = fileobj.read(BLOCK)
    except READ_ERRORS as exc:
        raise Abort(Code.CORRUPT_ARCHIVE, f"unreadable tar end: {exc}") from None
    if block != _ZERO_BLOCK:
        raise Abort(
            Code.CORRUPT_ARCHIVE,
            f"tar archive is truncated or has a damaged header at offset {offset}",
        )


def _entry(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Entry:
    if info.type in _FILE_TYPES:
        return Entry(
            name=info.name,
            kind=Kind.FILE,
            executable=bool(info.mode & 0o111),
            declared_size=info.size,
            open=functools.partial(_open_member, tf, info),
        )
    if info.type == tarfile.DIRTYPE:
        return Entry(name=info.name, kind=Kind.DIRECTORY)
    if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        what = "symbolic link" if info.type == tarfile.SYMTYPE else "hard link"
        target = printable(info.linkname)
        return Entry(name=info.name, kind=Kind.LINK, detail=f"{what} to '{target}' is not allowed")
    if info.type in _SPECIAL_TYPES:
        detail = f"{_SPECIAL_TYPES[info.type]} entries are not allowed"
    else:
        detail = f"tar entry type {info.type!r} is not supported"
    return Entry(name=info.name, kind=Kind.SPECIAL, detail=detail)


def _open_member(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Readable:
    stream = tf.extractfile(info)
    if stream is None:  # only for non-regular members, which never get here
        raise Abort(Code.CORRUPT_ARCHIVE, "member has no data stream")
    return stream


def _check_pax(fileobj: Any, size: int) -> None:
    """Refuse a pax header tarfile could choke on; leaves the stream where it was."""
    if not 0 <= size <= MAX_HEADER_BYTES:
        raise Abort(Code.CORRUPT_ARCHIVE, f"pax header of {size} bytes (limit {MAX_HEADER_BYTES})")
    start = fileobj.tell()
    buf: bytes = fileobj.read(-(-size // BLOCK) * BLOCK)
    fileobj.seek(start)
    if len(buf) < size:
        raise Abort(Code.CORRUPT_ARCHIVE, "truncated pax header")
    if buf[size:].strip(b"\0"):
        # tarfile keeps parsing records past the declared size; make sure there are none.
        raise Abort(Code.CORRUPT_ARCHIVE, "pax header padding is not zero")
    if _LONG_DIGITS.search(buf):
        raise Abort(Code.CORRUPT_ARCHIVE, "pax header holds an implausibly long number")
    pos = 0
    while pos < size:
        space = buf.find(b" ", pos, min(pos + 21, size))
        digits = buf[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise Abort(Code.CORRUPT_ARCHIVE, "malformed pax record length")
        end = pos + int(digits)
        equals = buf.find(b"=", space + 1, end)
        if end > size or equals <= space + 1 or buf[end - 1 : end] != b"\n":
            raise Abort(Code.CORRUPT_ARCHIVE, "malformed pax record")
        if buf[space + 1 : equals].startswith(b"GNU.sparse."):
            raise Abort(Code.UNSUPPORTED_FORMAT, "sparse tar members are not supported")
        pos = end


class _GuardedTarInfo(tarfile.TarInfo):
    """TarInfo whose extended-header handling is size-capped and pre-checked."""

    def _proc_pax(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        _check_pax(archive.fileobj, self.size)
        return cast(tarfile.TarInfo, cast(Any, super())._proc_pax(archive))

    def _proc_gnulong(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if not 0 <= self.size <= MAX_HEADER_BYTES:
            raise Abort(
                Code.CORRUPT_ARCHIVE,
                f"GNU long-name header of {self.size} bytes (limit {MAX_HEADER_BYTES})",
            )
        return cast(tarfile.TarInfo, cast(Any, super())._proc_gnulong(archive))

    def _proc_sparse(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        raise Abort(Code.UNSUPPORTED_FORMAT, "sparse tar members are not supported")
