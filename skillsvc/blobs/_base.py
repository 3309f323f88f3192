"""What every blob store offers (:class:`BlobStore`), and the errors and counters they share."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Final, Literal, Protocol

from skillsvc.errors import (
    ARCHIVE_MISSING_REASON,
    BLOB_CORRUPT_REASON,
    BLOB_STORE_UNAVAILABLE_REASON,
    DataLoss,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from skillsvc.metrics import BLOB_REQUESTS

Kind = Literal["archive", "kept"]
"""``archive``: the original archive of an installed package. ``kept``: the bytes of a
failed upload, kept for Retry until gc drops them."""

KINDS: Final[tuple[Kind, ...]] = ("archive", "kept")

DIRECTORIES: Final[dict[Kind, str]] = {"archive": "blobs/sha256", "kept": "kept/sha256"}
"""Where each kind lives, below the store root or the bucket prefix (the same layout
in both, so a backup of either is the same tree)."""

SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")

STREAM_CHUNK_BYTES: Final = 1024 * 1024
"""Default size of the pieces :meth:`BlobStore.stream` yields (DownloadPackage's chunk)."""

UNAVAILABLE_REASON: Final = BLOB_STORE_UNAVAILABLE_REASON
MISSING_REASON: Final = ARCHIVE_MISSING_REASON
CORRUPT_REASON: Final = BLOB_CORRUPT_REASON


def check_digest(sha256: str) -> str:
    """``sha256`` if it is 64 lower-case hex digits, else ``InvalidArgument``."""
    if not SHA256_HEX.fullmatch(sha256):
        raise InvalidArgument.field("sha256", "must be 64 lower-case hexadecimal digits")
    return sha256


def missing(kind: Kind, sha256: str, where: str) -> NotFound:
    """The error for an object that is not there."""
    what = "archive" if kind == "archive" else "kept upload"
    return NotFound(f"{what} {sha256} is not in the blob store ({where})", reason=MISSING_REASON)


def corrupt(kind: Kind, sha256: str, actual: str, where: str) -> DataLoss:
    """The error for an object whose bytes no longer hash to its name."""
    return DataLoss(
        f"{kind} {sha256} in the blob store ({where}) is damaged: its bytes hash to {actual}",
        reason=CORRUPT_REASON,
        metadata={"sha256": sha256, "actual_sha256": actual},
    )


def wrong_size(kind: Kind, sha256: str, size: int, expected: int, where: str) -> DataLoss:
    """The error for an object of another size than recorded (found before reading it
    all, so an oversized object is never copied whole)."""
    what = f"{size} bytes" if size <= expected else f"more than {expected} bytes"
    return DataLoss(
        f"{kind} {sha256} in the blob store ({where}) is damaged: it has {what}, "
        f"not the {expected} recorded",
        reason=CORRUPT_REASON,
        metadata={"sha256": sha256, "size_bytes": str(expected)},
    )


def unavailable(action: str, detail: str, where: str) -> Unavailable:
    """The error for a blob store that does not answer (or refuses us)."""
    return Unavailable(
        f"the blob store ({where}) could not {action}: {detail}", reason=UNAVAILABLE_REASON
    )


def count(op: str, result: str) -> None:
    """Count one blob store request (``skill_blob_store_requests_total``)."""
    BLOB_REQUESTS.labels(op, result).inc()


class BlobStore(Protocol):
    """Content-addressed storage of original archives and kept upload bytes.

    Objects are named by the SHA-256 of their bytes, so writing one twice is harmless
    and a reader can always check what it got. Errors are domain errors: a missing
    object is ``NotFound`` (``ARCHIVE_MISSING``), damaged bytes ``DataLoss``
    (``BLOB_CORRUPT``), a store that does not answer ``Unavailable``
    (``BLOB_STORE_UNAVAILABLE``; the local store's filesystem errors keep the file
    store's ``STORE_FULL``/``STORE_UNAVAILABLE``).
    """

    location: str
    """Where the objects are, for logs and ``skillsvc status`` (never a secret)."""
    shared: bool
    """True when other hosts see the same objects (a bucket); False for local blobs."""

    @property
    def down(self) -> bool:
        """True while the last :meth:`probe` failed (stale between probes: a hint for
        refusing work early, never a reason to skip an error check)."""
        ...

    async def put(self, kind: Kind, sha256: str, source: Path, *, move: bool = False) -> None:
        """Store ``source`` (whose SHA-256 the caller computed) as ``kind``/``sha256``.

        Idempotent; memory stays bounded whatever the size; returns once the object is
        durable and checked. ``source`` is left in place (the caller removes it) unless
        ``move``: then the caller gives it up, and a store on its filesystem may rename
        it (no new inode or link on a full disk) rather than link or copy it.
        """
        ...

    async def fetch(
        self, kind: Kind, sha256: str, dest: Path, *, expected_size: int | None = None
    ) -> None:
        """Write the object to ``dest``, hashing as it goes; on any error ``dest`` is gone.

        ``expected_size`` (what the database recorded, when the caller knows it) caps
        what is read: an object of another size is ``DataLoss`` (``BLOB_CORRUPT``)
        before its bytes are copied, or as soon as more arrive than expected.
        """
        ...

    def stream(
        self,
        kind: Kind,
        sha256: str,
        chunk_bytes: int = STREAM_CHUNK_BYTES,
        *,
        expected_size: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The object's bytes in pieces; ``DataLoss`` at the end if they hash wrong, or
        before the first piece if the object's size is not ``expected_size``."""
        ...

    async def exists(self, kind: Kind, sha256: str) -> bool:
        """True when the object is there (its bytes are not read)."""
        ...

    async def size(self, kind: Kind, sha256: str) -> int | None:
        """The object's size in bytes, or None when it is not there."""
        ...

    async def modified(self, kind: Kind, sha256: str) -> float | None:
        """When the object was last written (seconds since the epoch, by the store's
        clock: a bucket's ``Last-Modified``, a file's mtime), or None when it is not there."""
        ...

    async def intact(self, kind: Kind, sha256: str) -> bool:
        """True when the object is there and its bytes hash to its name (reads it all)."""
        ...

    async def delete(self, kind: Kind, sha256: str) -> None:
        """Remove the object; missing is fine."""
        ...

    async def move(self, sha256: str, src: Kind, dst: Kind) -> bool:
        """Turn a ``src`` object into a ``dst`` one (e.g. an unowned archive back into
        kept bytes); False when there was no ``src`` object."""
        ...

    async def digests(self, kind: Kind) -> list[str]:
        """Every digest stored as ``kind``, sorted."""
        ...

    async def probe(self) -> None:
        """Raise ``Unavailable`` unless the store answers (quickly)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
