"""Blobs in an S3-compatible bucket (``SKILLSVC_BLOB_STORE=s3://bucket/prefix``).

Keys: ``<prefix>/blobs/sha256/<hex>`` (archives of installed packages) and
``<prefix>/kept/sha256/<hex>`` (kept bytes of failed uploads), the local layout under
a prefix, shared by every replica on any host.

The client is **obstore** (Python bindings of the Rust ``object_store`` crate, as used
by Apache Arrow/DataFusion), not aiobotocore:

- it ships complete type hints (``mypy --strict`` needs no third-party stubs and no
  ``Any`` at this boundary), and one compiled wheel with no Python dependencies,
  where aiobotocore brings botocore and aiohttp and needs ``types-aiobotocore``;
- uploads from a file are streamed and switch to multipart by themselves above one
  part, with a bounded number of parts in flight (memory is ``_PART_BYTES`` times
  ``_PARTS_IN_FLIGHT``, whatever the archive's size); downloads stream in chunks;
- its async calls run on its own runtime without holding the GIL, so hashing,
  signing and HTTP never stall the event loop;
- it reads endpoint and credentials the standard AWS way (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
  ``AWS_REGION``/``AWS_DEFAULT_REGION``, web identity and container credentials),
  with explicit settings taking precedence.

Timeouts and retries are short on purpose: a bucket that is down makes installs and
downloads fail ``UNAVAILABLE`` within seconds (connect 2 s, a stalled read 10 s, at
most 2 retries within 4 s), while a large transfer that keeps moving may take its time
(each request may last up to 5 minutes).

Integrity: every request body carries ``x-amz-checksum-sha256`` (the client's
``checksum_algorithm``), which the server checks before it stores the bytes (SeaweedFS
answers ``BadDigest`` to a wrong one, as AWS does), so what arrives is what was sent;
the bytes sent are the file whose SHA-256 the caller computed as it received them;
and after the upload a HEAD checks the stored object's size. Every read hashes the
bytes again (:meth:`S3Blobs.fetch`, :meth:`S3Blobs.stream`, :meth:`S3Blobs.intact`),
so damage at rest is found where it matters.

A put skips the upload only when the object is there with the same size *and* the
``x-amz-meta-sha256`` a put of ours stored with it, so an object replaced by anything
else (other bytes of the same size, written without that metadata) is healed by the
next put of the right bytes. Not the server's ``x-amz-checksum-sha256``: obstore's HEAD
does not ask for it (``x-amz-checksum-mode``) nor return it, and after a multipart
upload it is a checksum of the parts' checksums, not the object's digest. Neither
would notice bytes that rot under an unchanged header without reading them all: the
reads above find those, and ``fsck --repair`` removes an object it finds damaged, so
the next put of the right bytes stores them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import os
import re
from collections.abc import AsyncGenerator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from skillsvc.blobs._base import (
    CORRUPT_REASON,
    DIRECTORIES,
    MISSING_REASON,
    SHA256_HEX,
    STREAM_CHUNK_BYTES,
    Kind,
    check_digest,
    corrupt,
    count,
    missing,
    unavailable,
    wrong_size,
)
from skillsvc.errors import InvalidArgument, SkillsvcError
from skillsvc.metrics import BLOB_BYTES
from skillsvc.store import os_errors

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

_PART_BYTES: Final = 8 * 1024 * 1024
"""Multipart part size (S3's minimum is 5 MiB); archives up to this go in one PUT."""
_PARTS_IN_FLIGHT: Final = 2
"""Parts uploaded at once: bounds an upload's memory to about 16 MiB."""
DIGEST_METADATA: Final = "sha256"
"""User metadata (``x-amz-meta-sha256``) :meth:`S3Blobs.put` stores with each object:
the digest its bytes had when the server checked them. See :meth:`S3Blobs.put`."""

CONNECT_TIMEOUT: Final = datetime.timedelta(seconds=2)
READ_TIMEOUT: Final = datetime.timedelta(seconds=10)
REQUEST_TIMEOUT: Final = datetime.timedelta(minutes=5)
MAX_RETRIES: Final = 2
RETRY_TIMEOUT: Final = datetime.timedelta(seconds=4)


def parse_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (the prefix may be empty)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidArgument.field(
            "SKILLSVC_BLOB_STORE", "must be s3://bucket or s3://bucket/prefix"
        )
    return parts.netloc, parts.path.strip("/")


@contextlib.contextmanager
def _bucket_errors(action: str, op: str, where: str) -> Iterator[None]:
    """Turn the client's errors into ``Unavailable`` (a missing object is the caller's).

    Credentials the bucket refuses are an operator's problem, not the caller's: they
    are ``UNAVAILABLE`` too, with the reason in the message, never PERMISSION_DENIED.
    """
    try:
        yield
    except (FileNotFoundError, SkillsvcError):
        raise
    except (BaseError, OSError, TimeoutError) as exc:
        count(op, "unavailable")
        raise unavailable(action, _describe(exc), where) from exc


_HTTP_STATUS: Final = re.compile(r"status code: (\d{3})[ A-Za-z]*")
_S3_CODE: Final = re.compile(r"<Code>([A-Za-z]+)</Code>")


def _describe(exc: BaseException) -> str:
    """A short, secret-free account of a client error: the HTTP status and S3 error
    code when the bucket answered, else the first line (a connection error...)."""
    text = str(exc)
    status, code = _HTTP_STATUS.search(text), _S3_CODE.search(text)
    denied = isinstance(exc, PermissionDeniedError | UnauthenticatedError) or (
        status is not None and status[1] in ("401", "403")
    )
    if status is not None:
        detail = status[0].removeprefix("status code: ").strip()
        detail += f" ({code[1]})" if code else ""
        return f"access denied: {detail}" if denied else detail
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class S3Blobs:
    """Objects in ``bucket`` under ``prefix``, through one obstore client."""

    shared = True

    def __init__(self, url: str, options: Mapping[str, str] | None = None) -> None:
        """``url`` is ``s3://bucket/prefix``; ``options`` are obstore ``S3Config`` keys
        (``endpoint``, ``access_key_id``, ``region``, ...) that override the environment."""
        bucket, prefix = parse_url(url)
        self._down = False
        self.location = url
        self.bucket = bucket
        self.prefix = prefix
        config = {"checksum_algorithm": "sha256", **(options or {})}
        client: ClientConfig = {
            # An http:// endpoint is the operator's choice (a bucket on loopback or a
            # private network); AWS itself is https.
            "allow_http": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            "timeout": REQUEST_TIMEOUT,
        }
        retry: RetryConfig = {
            "max_retries": MAX_RETRIES,
            "retry_timeout": RETRY_TIMEOUT,
            "backoff": {
                "init_backoff": datetime.timedelta(milliseconds=100),
                "max_backoff": datetime.timedelta(seconds=1),
                "base": 2,
            },
        }
        try:
            self._store = S3Store(
                bucket,
                prefix=prefix or None,
                config=cast("S3Config", config),
                client_options=client,
                retry_config=retry,
            )
        except (BaseError, ValueError) as exc:
            raise InvalidArgument.field("SKILLSVC_BLOB_STORE", _first_line(exc)) from exc

    def key(self, kind: Kind, sha256: str) -> str:
        """The object's key below the prefix."""
        return f"{DIRECTORIES[kind]}/{check_digest(sha256)}"

    # -- writing -------------------------------------------------------------------------

    async def put(self, kind: Kind, sha256: str, source: Path, *, move: bool = False) -> None:
        key = self.key(kind, sha256)
        with os_errors("read the archive to upload"):
            expected = (await asyncio.to_thread(os.stat, source)).st_size
        if await self._stored(kind, sha256, "put") == (expected, sha256):
            # Stored by this method, whole (the server checked the body's SHA-256),
            # and not replaced since (a replacement drops or changes the metadata).
            count("put", "ok")
            return
        with _bucket_errors("store the archive", "put", self.location):
            await obstore.put_async(
                self._store,
                key,
                source,
                attributes={DIGEST_METADATA: sha256},
                chunk_size=_PART_BYTES,
                max_concurrency=_PARTS_IN_FLIGHT,
            )
        stored = await self.size(kind, sha256)
        if stored != expected:
            count("put", "corrupt")
            raise unavailable(
                "store the archive",
                f"the stored object has {stored} bytes, not {expected}",
                self.location,
            )
        BLOB_BYTES.labels("out").inc(expected)
        count("put", "ok")

    async def _stored(self, kind: Kind, sha256: str, op: str) -> tuple[int, str] | None:
        """The object's size and the digest :meth:`put` recorded with it (``""`` if
        none), from one HEAD; None when there is no object."""
        key = self.key(kind, sha256)
        with _bucket_errors("check the archive", op, self.location):
            try:
                head = await obstore.get_async(self._store, key, options={"head": True})
            except FileNotFoundError:
                return None
        return int(head.meta["size"]), str(head.attributes.get(DIGEST_METADATA, ""))

    async def delete(self, kind: Kind, sha256: str) -> None:
        key = self.key(kind, sha256)
        with (
            _bucket_errors("remove the archive", "delete", self.location),
            contextlib.suppress(FileNotFoundError),
        ):
            await obstore.delete_async(self._store, key)
        count("delete", "ok")

    async def move(self, sha256: str, src: Kind, dst: Kind) -> bool:
        if not await self.exists(src, sha256):
            return False
        with _bucket_errors("keep an unowned archive", "put", self.location):
            try:
                # A server-side copy: no bytes through this process.
                await obstore.copy_async(self._store, self.key(src, sha256), self.key(dst, sha256))
            except FileNotFoundError:
                return False  # removed meanwhile by someone holding the lock we hold?
        await self.delete(src, sha256)
        return True

    # -- reading -------------------------------------------------------------------------

    async def _open(
        self, kind: Kind, sha256: str, op: str, expected_size: int | None
    ) -> obstore.GetResult:
        """GET the object; an object of another size than ``expected_size`` is refused
        from its Content-Length, before a byte of it is read."""
        key = self.key(kind, sha256)
        with _bucket_errors("read the archive", op, self.location):
            try:
                result = await obstore.get_async(self._store, key)
            except FileNotFoundError:
                count(op, "missing")
                raise missing(kind, sha256, self.location) from None
        size = int(result.meta["size"])
        if expected_size is not None and size != expected_size:
            count(op, "corrupt")
            raise wrong_size(kind, sha256, size, expected_size, self.location)
        return result

    async def fetch(
        self, kind: Kind, sha256: str, dest: Path, *, expected_size: int | None = None
    ) -> None:
        result = await self._open(kind, sha256, "fetch", expected_size)
        digest = hashlib.sha256()
        received = 0
        try:
            with os_errors("write the fetched archive"):
                out = await _create(dest)
            with out:
                with _bucket_errors("read the archive", "fetch", self.location):
                    async for chunk in result.stream(min_chunk_size=STREAM_CHUNK_BYTES):
                        received += len(chunk)
                        BLOB_BYTES.labels("in").inc(len(chunk))
                        if expected_size is not None and received > expected_size:
                            # The object grew after the GET's headers (or they lied).
                            count("fetch", "corrupt")
                            raise wrong_size(kind, sha256, received, expected_size, self.location)
                        with os_errors("write the fetched archive"):
                            await asyncio.to_thread(_write_and_hash, out, digest, chunk)
                with os_errors("write the fetched archive"):
                    await asyncio.to_thread(_flush, out)
            if digest.hexdigest() != sha256:
                count("fetch", "corrupt")
                raise corrupt(kind, sha256, digest.hexdigest(), self.location)
        except BaseException:
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise
        count("fetch", "ok")

    async def stream(
        self,
        kind: Kind,
        sha256: str,
        chunk_bytes: int = STREAM_CHUNK_BYTES,
        *,
        expected_size: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        result = await self._open(kind, sha256, "stream", expected_size)
        digest = hashlib.sha256()
        received = 0
        pieces = result.stream(min_chunk_size=chunk_bytes)
        while True:
            with _bucket_errors("read the archive", "stream", self.location):
                try:
                    chunk = await anext(pieces)
                except StopAsyncIteration:
                    break
            digest.update(chunk)
            BLOB_BYTES.labels("in").inc(len(chunk))
            received += len(chunk)
            if expected_size is not None and received > expected_size:
                count("stream", "corrupt")
                raise wrong_size(kind, sha256, received, expected_size, self.location)
            # Pieces may come bigger than asked (a whole received buffer): cut them.
            for start in range(0, len(chunk), chunk_bytes):
                yield bytes(chunk[start : start + chunk_bytes])
        if digest.hexdigest() != sha256:
            count("stream", "corrupt")
            raise corrupt(kind, sha256, digest.hexdigest(), self.location)
        count("stream", "ok")

    async def exists(self, kind: Kind, sha256: str) -> bool:
        return await self._size(kind, sha256, "exists") is not None

    async def size(self, kind: Kind, sha256: str) -> int | None:
        return await self._size(kind, sha256, "size")

    async def _size(self, kind: Kind, sha256: str, op: str) -> int | None:
        key = self.key(kind, sha256)
        with _bucket_errors("check the archive", op, self.location):
            try:
                meta = await obstore.head_async(self._store, key)
            except FileNotFoundError:
                count(op, "ok")
                return None
        count(op, "ok")
        return int(meta["size"])

    async def modified(self, kind: Kind, sha256: str) -> float | None:
        key = self.key(kind, sha256)
        with _bucket_errors("check the archive", "size", self.location):
            try:
                meta = await obstore.head_async(self._store, key)
            except FileNotFoundError:
                count("size", "ok")
                return None
        count("size", "ok")
        return meta["last_modified"].timestamp()

    async def intact(self, kind: Kind, sha256: str) -> bool:
        try:
            async for _chunk in self.stream(kind, sha256):
                pass
        except SkillsvcError as exc:
            if exc.reason in (MISSING_REASON, CORRUPT_REASON):
                return False
            raise
        return True

    async def digests(self, kind: Kind) -> list[str]:
        directory = DIRECTORIES[kind]
        found: list[str] = []
        with _bucket_errors("list archives", "list", self.location):
            async for batch in obstore.list(self._store, prefix=directory, chunk_size=1000):
                for meta in batch:
                    parent, _, name = str(meta["path"]).rpartition("/")
                    if parent.endswith(directory) and SHA256_HEX.fullmatch(name):
                        found.append(name)
        count("list", "ok")
        return sorted(found)

    @property
    def down(self) -> bool:
        return self._down

    async def probe(self) -> None:
        """List one key: answers only if the endpoint, the credentials and the bucket do.

        Its outcome is :attr:`down` until the next probe (one cut short by a timeout
        counts as failed)."""
        answered = False
        try:
            with _bucket_errors("answer", "probe", self.location):
                stream = obstore.list(self._store, prefix=DIRECTORIES["archive"], chunk_size=1)
                with contextlib.suppress(StopAsyncIteration):
                    await anext(stream)
            answered = True
        finally:
            self._down = not answered
        count("probe", "ok")

    async def close(self) -> None:
        """Nothing to release: the client's connections close with it."""


async def _create(dest: Path) -> BinaryIO:
    """``open(dest, "xb")`` in a thread; a caller cancelled meanwhile (a node stopping
    in the middle of a materialisation) does not leak the file the thread opened."""
    opening = asyncio.ensure_future(asyncio.to_thread(_open_new, dest))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


def _open_new(dest: Path) -> BinaryIO:
    return open(dest, "xb")  # closed by the caller's ``with``


def _close_opened(opening: asyncio.Future[BinaryIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _write_and_hash(out: Any, digest: Any, chunk: bytes) -> None:
    digest.update(chunk)
    out.write(chunk)


def _flush(out: Any) -> None:
    out.flush()
    os.fsync(out.fileno())
