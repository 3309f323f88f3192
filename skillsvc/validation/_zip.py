"""Reads zip archives member by member.

zipfile parses the central directory and decompresses members (``infolist()`` and
``open(ZipInfo)``); it never extracts. Before any member is read, the archive's
structure is checked against tricks zipfile accepts:

* Overlapping members (the "overlapping zip bomb", where many central-directory entries
  share one compressed body) are CORRUPT_ARCHIVE, not COMPRESSION_RATIO: no zip tool
  produces them, so they are malformed rather than merely too compressible, and refusing
  the structure outright means no member of it is ever decompressed. A member's span is
  its local header, name, extra field and compressed data; it must also end before the
  central directory.
* The local header must repeat the central directory's name byte for byte (readers that
  trust one or the other would see different files), and agree on the compression
  method and the encryption flag.

Only stored and deflate members are read. Encrypted members and other compression
methods (bzip2, lzma, ...) are UNSUPPORTED_FORMAT for that member, and the rest of the
archive is still checked: skill packages are made by ordinary zip tools, and every extra
decompressor is more attack surface.

The central directory is walked once before zipfile sees it (see ``_precount``), because
zipfile builds an object per record before anyone can count them.

Member data is limited by the central directory's sizes in two ways: a declared size or
ratio over the limits refuses the member before it is opened, and zipfile never returns
more than the declared uncompressed size (a member that really holds more fails its
CRC). The extractor additionally counts the bytes it actually writes.
"""

from __future__ import annotations

import functools
import itertools
import stat
import struct
import zipfile
from typing import BinaryIO, Final

from ._entries import READ_ERRORS, Abort, Entry, Kind, Readable, Sink
from ._model import Code
from ._paths import is_ignored

_LOCAL_HEADER: Final = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL_MAGIC: Final = b"PK\x01\x02"
_CENTRAL_HEADER_SIZE: Final = 46
_CENTRAL_LENGTHS: Final = struct.Struct("<HHH")  # name, extra, comment lengths at offset 28
_END: Final = struct.Struct("<4sHHHHIIH")
_END_MAGIC: Final = b"PK\x05\x06"
_LOCATOR: Final = struct.Struct("<4sIQI")
_LOCATOR_MAGIC: Final = b"PK\x06\x07"
_END64: Final = struct.Struct("<4sqhhIIqqqq")
_END64_MAGIC: Final = b"PK\x06\x06"
_LOCAL_MAGIC: Final = b"PK\x03\x04"
_UNIX: Final = 3
_FLAG_ENCRYPTED: Final = 0x1
_FLAG_PATCHED: Final = 0x20
_FLAG_STRONG_ENCRYPTION: Final = 0x40
_FLAG_UTF8: Final = 0x800
_METHODS: Final = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_SPECIAL_MODES: Final = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def read_zip(raw: BinaryIO, sink: Sink, *, entry_cap: int, max_entries: int) -> None:
    """Feed every member of a zip archive to ``sink``.

    The central directory tells up front how many entries (files and directories)
    there are; an archive with too many is refused before any is written. (The count
    is exact for any archive that would otherwise be valid; the extractor still counts
    what it reads.)
    """
    try:
        _precount(raw, entry_cap)
        archive = zipfile.ZipFile(raw)
    except READ_ERRORS as exc:
        raise Abort(Code.CORRUPT_ARCHIVE, f"unreadable zip archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > entry_cap:
            raise Abort(
                Code.TOO_MANY_FILES, f"zip archive has {len(infos)} entries (limit {entry_cap})"
            )
        try:
            _check_structure(raw, archive.start_dir, infos)
        except READ_ERRORS as exc:
            raise Abort(Code.CORRUPT_ARCHIVE, f"unreadable zip structure: {exc}") from None
        entries = [_entry(archive, info) for info in infos]
        counted = sum(1 for e in entries if not is_ignored(e.name))
        if counted > max_entries:
            raise Abort(
                Code.TOO_MANY_FILES,
                f"zip archive has {counted} entries, files and directories (limit {max_entries})",
            )
        for entry in entries:
            sink.add(entry)


def _precount(raw: BinaryIO, entry_cap: int) -> None:
    """Refuse an oversized central directory before zipfile builds a ZipInfo per entry.

    zipfile materialises every central-directory record up front: a 100 MiB archive of
    minimal records is two million objects, tens of seconds and a gigabyte of memory.
    This walks the records zipfile will walk (the end record is located exactly as
    ``zipfile._EndRecData`` does) without keeping any, and stops past ``entry_cap``.
    Anything it cannot make sense of is left for zipfile to reject.
    """
    span = _central_directory(raw)
    if span is None:
        return
    start, size = span
    if start < 0:
        return
    raw.seek(start)
    walked = count = 0
    while walked < size:
        header = raw.read(_CENTRAL_HEADER_SIZE)
        if len(header) != _CENTRAL_HEADER_SIZE or not header.startswith(_CENTRAL_MAGIC):
            return
        name_len, extra_len, comment_len = _CENTRAL_LENGTHS.unpack_from(header, 28)
        variable = name_len + extra_len + comment_len
        raw.seek(variable, 1)
        walked += _CENTRAL_HEADER_SIZE + variable
        count += 1
        if count > entry_cap:
            raise Abort(Code.TOO_MANY_FILES, f"zip archive has more than {entry_cap} entries")


def _central_directory(raw: BinaryIO) -> tuple[int, int] | None:
    """(offset, size) of the central directory as zipfile computes them, or None."""
    size = raw.seek(0, 2)
    location = -1
    if size >= _END.size:
        raw.seek(size - _END.size)
        record = raw.read(_END.size)
        if record.startswith(_END_MAGIC) and record.endswith(b"\0\0"):
            location = size - _END.size
    if location < 0:
        # An archive comment follows the end record: search the last 64 KiB for it.
        base = max(size - 0xFFFF - _END.size, 0)
        raw.seek(base)
        tail = raw.read()
        at = tail.rfind(_END_MAGIC)
        if at < 0 or len(tail) - at < _END.size:
            return None
        location = base + at
        record = tail[at : at + _END.size]
    central_size: int = _END.unpack(record)[5]
    if location >= _LOCATOR.size + _END64.size:
        raw.seek(location - _LOCATOR.size)
        if raw.read(_LOCATOR.size).startswith(_LOCATOR_MAGIC):
            raw.seek(location - _LOCATOR.size - _END64.size)
            record64 = raw.read(_END64.size)
            if record64.startswith(_END64_MAGIC):
                central_size = _END64.unpack(record64)[8]
                location -= _LOCATOR.size + _END64.size
    return location - central_size, central_size


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    # zipfile decodes strictly (UTF-8 when flagged, else cp437, which maps all 256
    # bytes), so encoding the undecorated name the same way gives back the exact bytes.
    encoding = "utf-8" if info.flag_bits & _FLAG_UTF8 else "cp437"
    return info.orig_filename.encode(encoding)


def _check_structure(raw: BinaryIO, central_start: int, infos: list[zipfile.ZipInfo]) -> None:
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        if info.header_offset < 0:
            raise Abort(Code.CORRUPT_ARCHIVE, "negative local header offset", info.orig_filename)
        raw.seek(info.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise Abort(Code.CORRUPT_ARCHIVE, "truncated local header", info.orig_filename)
        magic, _, flags, method, _, _, _, _, _, name_len, extra_len = _LOCAL_HEADER.unpack(header)
        if magic != _LOCAL_MAGIC:
            raise Abort(Code.CORRUPT_ARCHIVE, "bad local header signature", info.orig_filename)
        if raw.read(name_len) != _raw_name(info):
            raise Abort(
                Code.CORRUPT_ARCHIVE,
                "local header name differs from the central directory",
                info.orig_filename,
            )
        if method != info.compress_type or (flags ^ info.flag_bits) & _FLAG_ENCRYPTED:
            raise Abort(
                Code.CORRUPT_ARCHIVE,
                "local header disagrees with the central directory",
                info.orig_filename,
            )
        end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
        if end > central_start:
            raise Abort(
                Code.CORRUPT_ARCHIVE,
                "member data runs into the central directory",
                info.orig_filename,
            )
        spans.append((info.header_offset, end, info.orig_filename))
    spans.sort()
    for (_, prev_end, prev_name), (start, _, name) in itertools.pairwise(spans):
        if start < prev_end:
            raise Abort(Code.CORRUPT_ARCHIVE, f"member overlaps member '{prev_name}'", name)


def _entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Entry:
    # orig_filename, not filename: zipfile cuts filename at the first NUL, which would
    # hide the NUL from the path checks.
    name = info.orig_filename
    mode = info.external_attr >> 16 if info.create_system == _UNIX else 0
    file_type = stat.S_IFMT(mode)
    if file_type == stat.S_IFLNK:
        return Entry(name=name, kind=Kind.LINK, detail="symbolic links are not allowed")
    if file_type in _SPECIAL_MODES:
        detail = f"{_SPECIAL_MODES[file_type]} entries are not allowed"
        return Entry(name=name, kind=Kind.SPECIAL, detail=detail)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        detail = f"unknown unix file type {file_type:o} is not supported"
        return Entry(name=name, kind=Kind.SPECIAL, detail=detail)
    if file_type == stat.S_IFDIR or name.endswith("/"):
        return Entry(name=name, kind=Kind.DIRECTORY)
    if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
        return Entry(
            name=name, kind=Kind.UNSUPPORTED, detail="encrypted zip members are not supported"
        )
    if info.flag_bits & _FLAG_PATCHED:
        return Entry(
            name=name, kind=Kind.UNSUPPORTED, detail="patched-data zip members are not supported"
        )
    if info.compress_type not in _METHODS:
        return Entry(
            name=name,
            kind=Kind.UNSUPPORTED,
            detail=f"zip compression method {info.compress_type} is not supported"
            " (only stored and deflate are)",
        )
    return Entry(
        name=name,
        kind=Kind.FILE,
        executable=bool(mode & 0o111),
        declared_size=info.file_size,
        compressed_size=info.compress_size,
        open=functools.partial(_open_member, archive, info),
    )


def _open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Readable:
    return archive.open(info)
