"""A metered gzip decompressor that tarfile reads through.

We decompress ourselves instead of letting ``tarfile.open(mode="r:gz")`` do it because
only here can we see both sides of the stream: bytes consumed from the archive file and
bytes produced. That is what the compression-ratio rule needs for tar.gz.

Ratio choice for tar.gz: a tar stream has no per-member compressed size (the gzip
stream spans every member and header), so the ratio is judged on the *whole stream so
far*: once more than ``ratio_min_bytes`` have come out, out/in may not exceed
``max_ratio``. It is checked after every decompression step (at most 64 KiB of output),
so a bomb is stopped within a few hundred KiB of crossing the threshold, and it also
catches the variant a per-member ratio would miss: thousands of small, individually
unremarkable members of zeros.

The stream is forward-only apart from a bounded rewind window, which the tar reader uses
to inspect a pax header before tarfile parses it.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO, Final

from ._entries import Abort
from ._model import Code

_IN_CHUNK: Final = 16 * 1024
_OUT_CHUNK: Final = 64 * 1024
_MAGIC: Final = b"\x1f\x8b"


class GzipStream:
    """Reads decompressed bytes from a gzip file, enforcing output and ratio limits."""

    def __init__(
        self,
        raw: BinaryIO,
        *,
        max_out: int,
        max_ratio: int,
        ratio_min: int,
        window: int,
    ) -> None:
        self._raw = raw
        self._max_out = max_out
        self._max_ratio = max_ratio
        self._ratio_min = ratio_min
        self._window = window
        self._dec = zlib.decompressobj(wbits=31)
        self._input = b""
        self._raw_eof = False
        self._eof = False
        # self._data holds the decompressed bytes at stream offsets
        # [self._base, self._base + len(self._data)); self._pos is the read position.
        self._data = bytearray()
        self._base = 0
        self._pos = 0
        self.bytes_in = 0
        self.bytes_out = 0

    # --- the file-object surface tarfile needs -------------------------------------

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` decompressed bytes (all remaining ones if negative)."""
        while size < 0 or self._end() - self._pos < size:
            if not self._fill():
                break
        start = self._pos - self._base
        stop = len(self._data) if size < 0 else start + size
        chunk = bytes(self._data[start:stop])
        self._pos += len(chunk)
        self._trim(self._pos)
        return chunk

    def seek(self, pos: int, whence: int = 0, /) -> int:
        """Move to an absolute offset: forwards freely, backwards only inside the window."""
        if whence != 0:
            raise Abort(Code.CORRUPT_ARCHIVE, "unexpected relative seek in tar stream")
        if pos < self._base:
            raise Abort(Code.CORRUPT_ARCHIVE, "tar stream needs to seek backwards")
        while pos > self._end():
            # Skipped member data is decompressed (it has to be) but not retained.
            self._pos = self._end()
            self._trim(self._pos)
            if not self._fill():
                break
        self._pos = pos
        return pos

    def tell(self) -> int:
        """The current decompressed offset."""
        return self._pos

    def write(self, data: bytes, /) -> int:
        """Not writable; present because tarfile's file-object protocol names it."""
        raise OSError("read-only stream")

    def close(self) -> None:
        """Nothing to release; the caller owns the raw file."""

    # --- helpers ------------------------------------------------------------------

    def drain(self) -> None:
        """Decompress to the end so the gzip CRC and length trailers are verified."""
        while self._fill():
            self._pos = self._end()
            self._trim(self._pos)

    def _end(self) -> int:
        return self._base + len(self._data)

    def _trim(self, keep_from: int) -> None:
        # Drop history older than the rewind window, in big steps so that trimming stays
        # amortised O(1) per byte.
        excess = keep_from - self._window - self._base
        if excess > self._window:
            del self._data[:excess]
            self._base += excess

    def _fill(self) -> bool:
        """Decompress one more step; False at the clean end of the last gzip member."""
        while True:
            if self._eof:
                return False
            if not self._input and not self._raw_eof:
                self._input = self._raw.read(_IN_CHUNK)
                self._raw_eof = not self._input
            if self._dec.eof:
                if not self._next_member():
                    return False
                continue
            if not self._input:
                raise Abort(Code.CORRUPT_ARCHIVE, "truncated gzip stream")
            try:
                out = self._dec.decompress(self._input, _OUT_CHUNK)
            except zlib.error as exc:
                raise Abort(Code.CORRUPT_ARCHIVE, f"bad gzip data: {exc}") from None
            left = self._dec.unused_data if self._dec.eof else self._dec.unconsumed_tail
            self.bytes_in += len(self._input) - len(left)
            self._input = left
            if out:
                self._data += out
                self.bytes_out += len(out)
                self._check_limits()
                return True

    def _next_member(self) -> bool:
        """After a member's trailer: start the next member, or report the end."""
        while True:
            # Like the gzip module, tolerate zero padding between and after members.
            stripped = self._input.lstrip(b"\0")
            self.bytes_in += len(self._input) - len(stripped)
            self._input = stripped
            if len(self._input) < len(_MAGIC) and not self._raw_eof:
                more = self._raw.read(_IN_CHUNK)
                self._raw_eof = not more
                self._input += more
                continue
            if not self._input:
                self._eof = True
                return False
            if not self._input.startswith(_MAGIC):
                raise Abort(Code.CORRUPT_ARCHIVE, "trailing garbage after gzip stream")
            self._dec = zlib.decompressobj(wbits=31)
            return True

    def _check_limits(self) -> None:
        if self.bytes_out > self._max_out:
            raise Abort(
                Code.UNPACKED_TOO_LARGE,
                f"decompressed tar stream exceeds {self._max_out} bytes",
            )
        if self.bytes_out > self._ratio_min and self.bytes_out > self._max_ratio * self.bytes_in:
            raise Abort(
                Code.COMPRESSION_RATIO,
                f"gzip stream expands {self.bytes_out} / {self.bytes_in} bytes, more than"
                f" {self._max_ratio}:1",
            )
