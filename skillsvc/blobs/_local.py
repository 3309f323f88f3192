"""Blobs in the local file store: ``blobs/sha256/<hex>`` and ``kept/sha256/<hex>``.

The default (``SKILLSVC_BLOB_STORE`` unset), and what the service always did: objects
are files under the store root, on the same filesystem as staging, so storing one is a
hard link (no copy) made durable by fsyncing the file and its directory, and a reader
of the final path sees a complete file or none. The file store's error rules apply: a
full disk is ``ResourceExhausted`` (``STORE_FULL``), any other filesystem failure
``Unavailable`` (``STORE_UNAVAILABLE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Final

from skillsvc.blobs._base import (
    DIRECTORIES,
    KINDS,
    SHA256_HEX,
    STREAM_CHUNK_BYTES,
    Kind,
    check_digest,
    corrupt,
    count,
    missing,
    wrong_size,
)
from skillsvc.errors import SkillsvcError
from skillsvc.metrics import BLOB_BYTES
from skillsvc.store import fsync_path, open_no_follow, sha256_fd, store_error

_BLOB_MODE: Final = 0o444
_COPY_CHUNK: Final = 1024 * 1024


@contextlib.contextmanager
def _os_errors(action: str, op: str) -> Iterator[None]:
    """Translate ``OSError`` into the file store's domain errors, and count the request."""
    try:
        yield
    except OSError as exc:
        count(op, "unavailable")
        raise store_error(exc, action) from exc
    except SkillsvcError:
        raise
    count(op, "ok")


class LocalBlobs:
    """Objects as read-only files below ``root`` (the file store's root)."""

    shared = False
    down = False
    """The file store's filesystem: its own health check covers it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        """The file store's root; objects live in its ``blobs/`` and ``kept/``."""
        self.location = str(root)

    def path(self, kind: Kind, sha256: str) -> Path:
        """The file of object ``kind``/``sha256``."""
        return self.root / DIRECTORIES[kind] / check_digest(sha256)

    def directory(self, kind: Kind) -> Path:
        """The directory holding every object of ``kind``."""
        return self.root / DIRECTORIES[kind]

    # -- writing -------------------------------------------------------------------------

    async def put(self, kind: Kind, sha256: str, source: Path, *, move: bool = False) -> None:
        await asyncio.to_thread(self._put, kind, sha256, source, move)

    def _put(self, kind: Kind, sha256: str, source: Path, move: bool) -> None:
        target = self.path(kind, sha256)
        with _os_errors("store the archive", "put"):
            if stat.S_ISREG(_lstat_mode(target)):
                if move:
                    os.unlink(source)
                return  # same digest, same bytes: whoever put it there made it durable
            target.parent.mkdir(parents=True, exist_ok=True)
            # The bytes are flushed before their name appears (a crash cannot leave a
            # named, empty file); cheap when the spooler flushed them already, so the
            # mode is set after (it protects against writers, not against crashes).
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
                os.fchmod(fd, _BLOB_MODE)
            finally:
                os.close(fd)
            try:
                if move:
                    os.rename(source, target)
                else:
                    os.link(source, target)
            except FileExistsError:
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._copy_in(source, target)  # restore from a backup on another filesystem
            fsync_path(target.parent)
            BLOB_BYTES.labels("out").inc(os.lstat(target).st_size)

    def _copy_in(self, source: Path, target: Path) -> None:
        temporary = target.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(source, "rb") as src, open(temporary, "xb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
                dst.flush()
                os.fchmod(dst.fileno(), _BLOB_MODE)
                os.fsync(dst.fileno())
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    async def delete(self, kind: Kind, sha256: str) -> None:
        await asyncio.to_thread(self._delete, kind, sha256)

    def _delete(self, kind: Kind, sha256: str) -> None:
        target = self.path(kind, sha256)
        with _os_errors("remove the archive", "delete"):
            try:
                os.unlink(target)
            except FileNotFoundError:
                return
            fsync_path(target.parent)

    async def move(self, sha256: str, src: Kind, dst: Kind) -> bool:
        return await asyncio.to_thread(self._move, sha256, src, dst)

    def _move(self, sha256: str, src: Kind, dst: Kind) -> bool:
        source, target = self.path(src, sha256), self.path(dst, sha256)
        with _os_errors("keep an unowned archive", "put"):
            if not stat.S_ISREG(_lstat_mode(source)):
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISREG(_lstat_mode(target)):
                os.unlink(source)
            else:
                os.rename(source, target)
                fsync_path(target.parent)
            fsync_path(source.parent)
        return True

    # -- reading -------------------------------------------------------------------------

    async def fetch(
        self, kind: Kind, sha256: str, dest: Path, *, expected_size: int | None = None
    ) -> None:
        await asyncio.to_thread(self._fetch, kind, sha256, dest, expected_size)

    def _fetch(self, kind: Kind, sha256: str, dest: Path, expected_size: int | None) -> None:
        source = self.path(kind, sha256)
        try:
            with _os_errors("read the archive", "fetch"):
                try:
                    # Same filesystem as staging: a link is the copy, then one read checks it.
                    os.link(source, dest)
                except FileNotFoundError:
                    count("fetch", "missing")
                    raise missing(kind, sha256, self.location) from None
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self._check_size(kind, sha256, os.lstat(source).st_size, expected_size)
                    shutil.copyfile(source, dest)
                fd = open_no_follow(str(dest))
                try:
                    self._check_size(kind, sha256, os.fstat(fd).st_size, expected_size)
                    actual = sha256_fd(fd)
                finally:
                    os.close(fd)
                if actual != sha256:
                    count("fetch", "corrupt")
                    raise corrupt(kind, sha256, actual, self.location)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def _check_size(self, kind: Kind, sha256: str, size: int, expected: int | None) -> None:
        """Refuse an object of another size than recorded before reading (or copying) it."""
        if expected is not None and size != expected:
            count("fetch", "corrupt")
            raise wrong_size(kind, sha256, size, expected, self.location)

    async def stream(
        self,
        kind: Kind,
        sha256: str,
        chunk_bytes: int = STREAM_CHUNK_BYTES,
        *,
        expected_size: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        source = self.path(kind, sha256)
        try:
            fd = await asyncio.to_thread(
                os.open, source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except FileNotFoundError:
            count("stream", "missing")
            raise missing(kind, sha256, self.location) from None
        except OSError as exc:
            count("stream", "unavailable")
            raise store_error(exc, "open the archive") from exc
        try:
            size = (await asyncio.to_thread(os.fstat, fd)).st_size
        except OSError as exc:
            os.close(fd)
            count("stream", "unavailable")
            raise store_error(exc, "open the archive") from exc
        if expected_size is not None and size != expected_size:
            os.close(fd)
            count("stream", "corrupt")
            raise wrong_size(kind, sha256, size, expected_size, self.location)
        digest = hashlib.sha256()

        def read() -> bytes:
            chunk = os.read(fd, chunk_bytes)
            digest.update(chunk)
            return chunk

        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(read)
                except OSError as exc:
                    count("stream", "unavailable")
                    raise store_error(exc, "read the archive") from exc
                if not chunk:
                    break
                BLOB_BYTES.labels("in").inc(len(chunk))
                yield chunk
        finally:
            os.close(fd)
        if digest.hexdigest() != sha256:
            count("stream", "corrupt")
            raise corrupt(kind, sha256, digest.hexdigest(), self.location)
        count("stream", "ok")

    async def exists(self, kind: Kind, sha256: str) -> bool:
        target = self.path(kind, sha256)
        with _os_errors("check the archive", "exists"):
            return stat.S_ISREG(await asyncio.to_thread(_lstat_mode, target))

    async def size(self, kind: Kind, sha256: str) -> int | None:
        target = self.path(kind, sha256)
        with _os_errors("measure the archive", "size"):
            try:
                return (await asyncio.to_thread(os.lstat, target)).st_size
            except FileNotFoundError:
                return None

    async def modified(self, kind: Kind, sha256: str) -> float | None:
        target = self.path(kind, sha256)
        with _os_errors("measure the archive", "size"):
            try:
                return (await asyncio.to_thread(os.lstat, target)).st_mtime
            except FileNotFoundError:
                return None

    async def intact(self, kind: Kind, sha256: str) -> bool:
        return await asyncio.to_thread(self._intact, kind, sha256)

    def _intact(self, kind: Kind, sha256: str) -> bool:
        target = self.path(kind, sha256)
        with _os_errors("check the archive", "fetch"):
            try:
                fd = open_no_follow(str(target))
            except OSError:  # missing, or a link where the archive should be
                return False
            try:
                return sha256_fd(fd) == sha256
            finally:
                os.close(fd)

    async def digests(self, kind: Kind) -> list[str]:
        return await asyncio.to_thread(self._digests, kind)

    def _digests(self, kind: Kind) -> list[str]:
        with _os_errors("list archives", "list"):
            try:
                entries = list(os.scandir(self.directory(kind)))
            except FileNotFoundError:
                return []
        return sorted(e.name for e in entries if SHA256_HEX.fullmatch(e.name))

    def usage_bytes(self) -> int:
        """Total size of the objects (blocking)."""
        total = 0
        for kind in KINDS:
            for entry in _scandir(self.directory(kind)):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    async def probe(self) -> None:
        """Nothing to do: the file store's own probe covers this filesystem."""

    async def close(self) -> None:
        """Nothing to release."""


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except FileNotFoundError:
        return []
