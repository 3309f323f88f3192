"""Archive builders for the validator tests: well-formed ones and hand-crafted hostile ones.

zip members that zipfile refuses to write (NUL in names, overlapping data, a local
header that disagrees with the central directory) are assembled with ``struct`` by
:func:`raw_zip`. Bombs are produced by :func:`deflate_zeros`, which emits a deflate stream
of any length of zeros without ever holding it: after a full flush, compressing one more
MiB of zeros always yields the same bytes, so one compressed MiB is repeated.
"""

from __future__ import annotations

import gzip
import io
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

GOOD_SKILL_MD = b"""---
name: pdf-tools
description: Fill, merge and split PDF files.
version: 1.2.3
license: Apache-2.0
compatibility: Python 3.11+
allowed-tools: Bash Read
metadata:
  author: platform-team
---
# PDF tools

Use `scripts/merge.py` to merge files.
"""

GOOD_FILES: dict[str, bytes] = {
    "SKILL.md": GOOD_SKILL_MD,
    "scripts/merge.py": b"#!/usr/bin/env python3\nprint('merge')\n",
    "references/guide.md": b"# Guide\n" * 50,
    "assets/empty.txt": b"",
}


def skill_md(front_matter: str, body: str = "# Skill\n") -> bytes:
    """A SKILL.md with the given YAML front matter text."""
    return f"---\n{front_matter}---\n{body}".encode()


def minimal_front_matter(**fields: str) -> str:
    """Front matter with a valid name and description plus ``fields`` (raw YAML values)."""
    values = {"name": "pdf-tools", "description": "Does PDF things."} | fields
    return "".join(f"{key}: {value}\n" for key, value in values.items())


# --- tar -------------------------------------------------------------------------------


@dataclass
class TarMember:
    """One tar member to write."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)


def tar_bytes(members: Sequence[TarMember], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive of ``members``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.mode = member.mode
            info.linkname = member.linkname
            info.size = len(member.data) if member.type == tarfile.REGTYPE else 0
            info.mtime = 1_700_000_000
            if member.pax:
                info.pax_headers = dict(member.pax)
            archive.addfile(info, io.BytesIO(member.data) if info.size else None)
    return out.getvalue()


def tar_of(files: dict[str, bytes], *, prefix: str = "", mode: int = 0o644) -> bytes:
    """A plain tar of ``files`` (optionally under a top-level folder with its entry)."""
    members: list[TarMember] = []
    if prefix:
        members.append(TarMember(prefix.rstrip("/"), type=tarfile.DIRTYPE, mode=0o755))
    members += [TarMember(prefix + name, data, mode=mode) for name, data in files.items()]
    return tar_bytes(members)


def gz(data: bytes) -> bytes:
    """``data`` gzip-compressed (deterministic header)."""
    return gzip.compress(data, mtime=0)


def tar_header(name: str, size: int, *, typeflag: bytes = b"0") -> bytes:
    """One ustar header block, for streams built by hand."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = typeflag
    info.mtime = 1_700_000_000
    return info.tobuf(format=tarfile.USTAR_FORMAT)


# --- zip -------------------------------------------------------------------------------


@dataclass
class ZipMember:
    """One zip member to write with zipfile."""

    name: str
    data: bytes = b""
    mode: int | None = 0o100644  # unix st_mode; None for an MS-DOS-made member
    method: int = zipfile.ZIP_DEFLATED


def zip_bytes(members: Sequence[ZipMember]) -> bytes:
    """A zip archive of ``members`` written by zipfile."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for member in members:
            info = zipfile.ZipInfo(member.name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = member.method
            if member.mode is None:
                info.create_system = 0
            else:
                info.create_system = 3
                info.external_attr = member.mode << 16
            archive.writestr(info, member.data)
    return out.getvalue()


def zip_of(files: dict[str, bytes], *, prefix: str = "", mode: int = 0o100644) -> bytes:
    """A zip of ``files`` (optionally under a top-level folder with its entry)."""
    members: list[ZipMember] = []
    if prefix:
        members.append(ZipMember(prefix, mode=stat.S_IFDIR | 0o755, method=zipfile.ZIP_STORED))
    members += [ZipMember(prefix + name, data, mode=mode) for name, data in files.items()]
    return zip_bytes(members)


@dataclass
class RawMember:
    """A zip member assembled byte by byte; every field may lie."""

    name: bytes
    data: bytes = b""  # stored as given (already compressed when method is deflate)
    method: int = zipfile.ZIP_STORED
    flags: int = 0
    crc: int | None = None  # default: CRC of data (right for stored members)
    size: int | None = None  # uncompressed size; default len(data)
    compress_size: int | None = None  # default len(data)
    local_name: bytes | None = None  # default: same as name
    create_system: int = 3
    external_attr: int = 0o100644 << 16
    offset: int | None = None  # central directory's local header offset override
    write_local: bool = True  # False: only a central-directory entry (shares data)


def raw_zip(members: Sequence[RawMember]) -> bytes:
    """Assemble a zip archive exactly as described, inconsistencies included."""
    body = bytearray()
    central = bytearray()
    offsets: list[int] = []
    for member in members:
        crc = zlib.crc32(member.data) if member.crc is None else member.crc
        size = len(member.data) if member.size is None else member.size
        csize = len(member.data) if member.compress_size is None else member.compress_size
        local_name = member.name if member.local_name is None else member.local_name
        if member.write_local:
            offsets.append(len(body))
            body += struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                20,
                member.flags,
                member.method,
                0,
                0x21,
                crc,
                csize,
                size,
                len(local_name),
                0,
            )
            body += local_name + member.data
        offset = member.offset if member.offset is not None else offsets[-1]
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            (member.create_system << 8) | 20,
            20,
            member.flags,
            member.method,
            0,
            0x21,
            crc,
            csize,
            size,
            len(member.name),
            0,
            0,
            0,
            0,
            member.external_attr,
            offset,
        )
        central += member.name
    count = len(members)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), len(body), 0)
    return bytes(body + central + end)


def with_zip64_end(data: bytes) -> bytes:
    """``data`` (a zip without a comment) with zip64 end records, as big archives have."""
    at = data.rfind(b"PK\x05\x06")
    _, _, _, on_disk, total, size, offset, _ = struct.unpack("<4sHHHHIIH", data[at : at + 22])
    record64 = struct.pack(
        "<4sqhhIIqqqq", b"PK\x06\x06", 44, 45, 45, 0, 0, on_disk, total, size, offset
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:at] + record64 + locator + end


def many_central_records(count: int) -> bytes:
    """A zip whose central directory repeats one record ``count`` times (one local body)."""
    skill = skill_md(minimal_front_matter())
    extra = [RawMember(b"SKILL.md", skill, write_local=False, offset=0)] * (count - 1)
    return raw_zip([RawMember(b"SKILL.md", skill), *extra])


def deflate(data: bytes) -> bytes:
    """Raw deflate of ``data`` (as stored in zip members)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


# --- bombs -----------------------------------------------------------------------------

_MIB = 1 << 20


def deflate_zeros(mib: int, *, prefix: bytes = b"", wbits: int = -15) -> Iterator[bytes]:
    """A deflate stream (raw, or gzip with ``wbits=31``) of ``prefix`` + ``mib`` MiB of zeros.

    Yields about 1 KiB per MiB; the gzip trailer's CRC is left zero (validation stops
    long before reading it).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    yield compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(_MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(_MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert block == again, "full-flush blocks of zeros are expected to repeat"
    yield block
    yield again
    for _ in range(mib - 2):
        yield block
    yield compressor.flush()


def zip_zero_bomb(mib: int, name: str = "zeros.bin") -> bytes:
    """A zip holding one deflated member of ``mib`` MiB of zeros, headers honest."""
    data = b"".join(deflate_zeros(mib))
    return raw_zip(
        [
            RawMember(b"SKILL.md", skill_md(minimal_front_matter())),
            RawMember(
                name.encode(),
                data,
                method=zipfile.ZIP_DEFLATED,
                crc=0,
                size=(mib * _MIB) & 0xFFFFFFFF if mib < 4096 else 0xFFFFFFFE,
            ),
        ]
    )


def tgz_zero_bomb(mib: int) -> bytes:
    """A tar.gz holding one member of ``mib`` MiB of zeros (the header tells the truth)."""
    header = tar_header("zeros.bin", mib * _MIB)
    return b"".join(deflate_zeros(mib, prefix=header, wbits=31))
