"""Writes accepted entries beneath the destination, and nowhere else.

The destination is only ever reached through directory file descriptors opened with
``O_NOFOLLOW | O_DIRECTORY``, one component at a time, and files are created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to their parent's descriptor. We never create
a link, so there is nothing to follow, but the descriptors make that a property of the
code rather than of the archive: even a name we failed to refuse could not make a write
land outside the tree.

Sizes are counted as bytes are written; header sizes are only used to refuse early.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from typing import Final

from ._entries import READ_ERRORS, Abort, Entry, Kind, Readable, printable
from ._model import Code, FileEntry, Limits, Severity, Violation
from ._paths import NameTable, PathError, is_ignored, normalize

_CHUNK: Final = 64 * 1024
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _TreeError(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _tree_error(exc: OSError) -> _TreeError:
    """Translate a name-related OSError; anything else (ENOSPC, EIO...) is re-raised."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
        # The name table should have caught this; the filesystem folds names in some
        # way it does not (e.g. a normalising filesystem with different rules).
        return _TreeError(Code.DUPLICATE_ENTRY, "collides with another entry on disk")
    if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
        return _TreeError(Code.BAD_PATH, "the filesystem refuses this name")
    raise exc


class DestTree:
    """The destination directory, addressed by descriptor."""

    def __init__(self, root_fd: int) -> None:
        self._root = root_fd
        self._made: set[tuple[str, ...]] = set()
        # The most recently used parent directory: archives list siblings together.
        self._cached: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        """Release the cached directory descriptor (not the root's)."""
        self._drop_cache()

    def makedirs(self, parts: tuple[str, ...]) -> None:
        """Create the directory ``parts`` and its parents (mode 0o755)."""
        if parts not in self._made:
            self._walk(parts)

    def create(self, parts: tuple[str, ...]) -> int:
        """Create a new, empty file and return its descriptor (mode 0o600 until chmod)."""
        parent = self._walk(parts[:-1])
        try:
            return os.open(parts[-1], _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        except OSError as exc:
            raise _tree_error(exc) from None

    def read_root_file(self, name: str, cap: int) -> bytes | None:
        """Up to ``cap`` bytes of the regular file ``name`` in the root, None if absent."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self._root)
        except FileNotFoundError:
            return None
        try:
            if not _is_regular(fd):
                return None
            chunks: list[bytes] = []
            left = cap
            while left > 0:
                chunk = os.read(fd, min(left, _CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def hoist(self, top: str) -> None:
        """Move the children of directory ``top`` up into the root and remove ``top``.

        Every written entry lives under ``top``, so the root holds nothing else; the
        folder is first renamed to a name none of its children use, so no child can
        collide with it on the way up.
        """
        self._drop_cache()
        try:
            top_fd = os.open(top, _DIR_FLAGS, dir_fd=self._root)
        except FileNotFoundError:
            return  # nothing under it was accepted
        try:
            children = os.listdir(top_fd)
        finally:
            os.close(top_fd)
        temp = top + ".strip"
        while temp in children or temp == top:
            temp += "_"
        os.rename(top, temp, src_dir_fd=self._root, dst_dir_fd=self._root)
        temp_fd = os.open(temp, _DIR_FLAGS, dir_fd=self._root)
        try:
            for child in children:
                os.rename(child, child, src_dir_fd=temp_fd, dst_dir_fd=self._root)
        finally:
            os.close(temp_fd)
        os.rmdir(temp, dir_fd=self._root)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _walk(self, parts: tuple[str, ...]) -> int:
        """Descriptor of directory ``parts``, creating missing components."""
        if not parts:
            return self._root
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        fd = self._root
        try:
            for depth in range(1, len(parts) + 1):
                name = parts[depth - 1]
                created = False
                if parts[:depth] not in self._made:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                        created = True
                    except FileExistsError:
                        pass
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                if fd != self._root:
                    os.close(fd)
                fd = child
                if created:
                    os.fchmod(fd, 0o755)  # mkdir's mode is filtered by the umask
                self._made.add(parts[:depth])
        except OSError as exc:
            if fd != self._root:
                os.close(fd)
            raise _tree_error(exc) from None
        self._drop_cache()
        self._cached = (parts, fd)
        return fd


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Extractor:
    """The Sink that judges each entry and writes the accepted ones."""

    def __init__(self, tree: DestTree, limits: Limits) -> None:
        self.tree = tree
        self.limits = limits
        # Every header costs a parse and a name check, even those that are not counted
        # (``__MACOSX/`` entries, refused names): a hard cap on them all.
        self.entry_cap = 2 * limits.max_files + 64
        self.violations: list[Violation] = []
        self.files: dict[str, FileEntry] = {}
        self.unpacked = 0
        # Compressed bytes of the members written so far, when the format says (zip):
        # the denominator of the archive-wide ratio. tar.gz is metered on its gzip stream
        # (see _gzip), and plain tar does not compress.
        self.compressed = 0
        self.current = ""
        self._entries = 0
        # Files, directories and refused entries: what SPEC §3's entry limit counts.
        self._counted = 0
        # Directories are created after the last entry is read (those not created by
        # then as some file's parent), so a refused archive of directories costs no
        # mkdir at all.
        self._dirs: list[tuple[str, tuple[str, ...]]] = []
        self._names = NameTable()
        self._tops: set[str] = set()
        self._root_non_dir = False

    def violate(
        self, code: Code, path: str, message: str, severity: Severity = Severity.ERROR
    ) -> None:
        """Record a violation (the path is escaped for display)."""
        self.violations.append(Violation(code, printable(path), message, severity))

    def strip_prefix(self) -> str | None:
        """The single top-level folder to strip, if the layout has one."""
        if len(self._tops) == 1 and not self._root_non_dir:
            return next(iter(self._tops))
        return None

    def add(self, entry: Entry) -> None:
        """Judge one entry; write it if it is an acceptable file or directory."""
        # Remembered so that an Abort raised while reading this entry names it; cleared
        # afterwards so that a later stream-level Abort is not pinned on it.
        self.current = entry.name
        self._add(entry)
        self.current = ""

    def _add(self, entry: Entry) -> None:
        self._entries += 1
        if self._entries > self.entry_cap:
            raise Abort(Code.TOO_MANY_FILES, f"more than {self.entry_cap} archive entries")
        is_dir = entry.kind is Kind.DIRECTORY
        try:
            parts = normalize(entry.name, is_dir=is_dir, limits=self.limits)
        except PathError as exc:
            self.violate(exc.code, entry.name, exc.message)
            return
        if not parts:
            if not is_dir:
                self.violate(Code.BAD_PATH, entry.name, "entry name denotes the archive root")
            return
        if is_ignored(entry.name):
            return
        self._counted += 1
        if self._counted > self.limits.max_files:
            raise Abort(
                Code.TOO_MANY_FILES,
                f"more than {self.limits.max_files} entries (files and directories)",
            )
        self._tops.add(parts[0])
        if len(parts) == 1 and not is_dir:
            self._root_non_dir = True
        conflict = self._names.claim(parts, is_dir=is_dir)
        if conflict is not None:
            self.violate(Code.DUPLICATE_ENTRY, entry.name, conflict)
        # Reported even when the name collided too: "this is a link" is the more useful
        # half of the story.
        if entry.kind is Kind.LINK:
            self.violate(Code.LINK_ENTRY, entry.name, entry.detail)
        elif entry.kind is Kind.SPECIAL:
            self.violate(Code.SPECIAL_FILE, entry.name, entry.detail)
        elif entry.kind is Kind.UNSUPPORTED:
            self.violate(Code.UNSUPPORTED_FORMAT, entry.name, entry.detail)
        elif conflict is None and is_dir:
            self._dirs.append((entry.name, parts))
        elif conflict is None:
            try:
                self._write_file(entry, parts)
            except _TreeError as exc:
                self.violate(exc.code, entry.name, exc.message)

    def finish(self) -> None:
        """Create the directory entries no file needed (empty directories)."""
        for name, parts in self._dirs:
            try:
                self.tree.makedirs(parts)
            except _TreeError as exc:
                self.violate(exc.code, name, exc.message)

    def _too_compressed(self, unpacked: int, compressed: int) -> bool:
        return unpacked > self.limits.ratio_min_bytes and unpacked > (
            self.limits.max_ratio * compressed
        )

    def _archive_ratio_message(self) -> str:
        return (
            f"the archive as a whole expands beyond {self.limits.max_ratio}:1"
            f" ({self.compressed} compressed bytes so far)"
        )

    def _write_file(self, entry: Entry, parts: tuple[str, ...]) -> None:
        limits = self.limits
        # Header sizes may lie, but only in the direction that gets them past us; a
        # header that admits to exceeding a limit is believed.
        compressed = entry.compressed_size
        if compressed is not None and self._too_compressed(entry.declared_size, compressed):
            raise Abort(
                Code.COMPRESSION_RATIO,
                f"declares {entry.declared_size} bytes from {compressed} compressed,"
                f" more than {limits.max_ratio}:1",
            )
        if compressed is not None:
            # The archive as a whole: many members, each under ratio_min_bytes, must not
            # add up to a bomb (SPEC §3).
            self.compressed += compressed
            if self._too_compressed(self.unpacked + entry.declared_size, self.compressed):
                raise Abort(Code.COMPRESSION_RATIO, self._archive_ratio_message())
        if entry.declared_size > limits.max_file_bytes:
            raise Abort(
                Code.FILE_TOO_LARGE,
                f"declares {entry.declared_size} bytes (limit {limits.max_file_bytes})",
            )
        if self.unpacked + entry.declared_size > limits.max_unpacked_bytes:
            raise Abort(
                Code.UNPACKED_TOO_LARGE,
                f"unpacked size would exceed {limits.max_unpacked_bytes} bytes",
            )
        fd = self.tree.create(parts)
        reader: Readable | None = None
        try:
            reader = _open(entry)
            digest = hashlib.sha256()
            size = 0
            while True:
                room = min(limits.max_file_bytes - size, limits.max_unpacked_bytes - self.unpacked)
                # Ask for one byte past the allowance: getting it proves the overrun
                # without decompressing anything beyond it.
                chunk = _read(reader, min(_CHUNK, room + 1))
                if not chunk:
                    break
                if len(chunk) > room:
                    if size + len(chunk) > limits.max_file_bytes:
                        raise Abort(
                            Code.FILE_TOO_LARGE,
                            f"larger than {limits.max_file_bytes} bytes",
                        )
                    raise Abort(
                        Code.UNPACKED_TOO_LARGE,
                        f"unpacked size exceeds {limits.max_unpacked_bytes} bytes",
                    )
                size += len(chunk)
                if compressed is not None and self._too_compressed(size, compressed):
                    raise Abort(
                        Code.COMPRESSION_RATIO,
                        f"expands beyond {limits.max_ratio}:1 ({compressed} compressed bytes)",
                    )
                if compressed is not None and self._too_compressed(
                    self.unpacked + len(chunk), self.compressed
                ):
                    raise Abort(Code.COMPRESSION_RATIO, self._archive_ratio_message())
                _write_all(fd, chunk)
                digest.update(chunk)
                self.unpacked += len(chunk)
            os.fchmod(fd, 0o755 if entry.executable else 0o644)
        finally:
            os.close(fd)
            if reader is not None:
                _close(reader)
        path = "/".join(parts)
        self.files[path] = FileEntry(path, size, digest.hexdigest(), entry.executable)


def _open(entry: Entry) -> Readable:
    if entry.open is None:
        raise Abort(Code.CORRUPT_ARCHIVE, "member has no data")
    try:
        return entry.open()
    except READ_ERRORS as exc:
        raise Abort(Code.CORRUPT_ARCHIVE, f"cannot open member: {exc}") from None


def _read(reader: Readable, size: int) -> bytes:
    try:
        return reader.read(size)
    except READ_ERRORS as exc:
        raise Abort(Code.CORRUPT_ARCHIVE, f"cannot read member data: {exc}") from None


def _close(reader: Readable) -> None:
    # A member stream that fails to close has already failed to read, and said so.
    with contextlib.suppress(*READ_ERRORS):
        reader.close()
