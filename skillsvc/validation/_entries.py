"""Internal vocabulary shared by the archive readers and the extractor.

The readers (``_tar``, ``_zip``) turn archive members into :class:`Entry` values and hand
them to a :class:`Sink` one at a time; the sink (``_extract.Extractor``) decides what is
written. A reader signals a condition that ends the whole validation by raising
:class:`Abort`; anything the sink can skip past is recorded as a violation instead.
"""

from __future__ import annotations

import enum
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from ._model import Code

# What tarfile and zipfile raise on hostile input. They are not documented to raise only
# their own exception types: truncated or crafted archives surface as ValueError
# (negative seeks, bad literals), struct.error, UnicodeDecodeError, EOFError,
# NotImplementedError (unknown zip features), RuntimeError, OSError (EINVAL on a bogus
# seek offset) and others. Only calls that read the *archive* are wrapped with this; the
# writes to the destination are deliberately outside it so that ENOSPC and friends
# propagate to the caller.
READ_ERRORS: Final = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    IndexError,
    KeyError,
    NotImplementedError,
    RuntimeError,
)

MAX_VIOLATION_PATH_CHARS: Final = 512


class Abort(Exception):
    """Stops validation: a limit was hit or the archive cannot be read any further."""

    def __init__(self, code: Code, message: str, path: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path


class Kind(enum.Enum):
    """What an archive member is, as far as extraction is concerned."""

    FILE = enum.auto()
    DIRECTORY = enum.auto()
    LINK = enum.auto()
    SPECIAL = enum.auto()
    UNSUPPORTED = enum.auto()


class Readable(Protocol):
    """The part of a member stream the extractor uses."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One archive member, described before any of its data is read."""

    name: str
    """The member name exactly as the archive stores it (decoded, not normalised)."""
    kind: Kind
    """How to treat the member."""
    executable: bool = False
    """Any exec bit set in the archive's mode."""
    detail: str = ""
    """Why a LINK / SPECIAL / UNSUPPORTED member is refused: the violation message."""
    declared_size: int = 0
    """The size the header claims; only ever used to refuse early, never to allow."""
    compressed_size: int | None = None
    """Compressed size from the zip central directory; None for tar members."""
    open: Callable[[], Readable] | None = None
    """Opens the member's data (FILE only)."""


class Sink(Protocol):
    """Receives the entries of an archive in order."""

    def add(self, entry: Entry) -> None:
        """Handle one entry; raises Abort to stop the whole archive."""


def printable(name: str) -> str:
    """``name`` with every non-printable character escaped, length-capped.

    Violation paths end up in protobuf strings, logs and terminals: they need valid UTF-8
    (undecodable bytes arrive as lone surrogates) without control or layout characters.
    """
    out: list[str] = []
    for ch in name:
        code = ord(ch)
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    text = "".join(out)
    if len(text) > MAX_VIOLATION_PATH_CHARS:
        text = text[:MAX_VIOLATION_PATH_CHARS] + "..."
    return text
