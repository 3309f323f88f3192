"""Low-level file operations the store is built from: durability, removal, hashing.

Everything here blocks and is meant to run in a worker thread. Nothing here knows the
store's layout; :mod:`skillsvc.store._store` decides which paths these touch.

Durability of a freshly written tree uses ``syncfs(2)`` of the filesystem when the C
library has it, else ``fsync(2)`` of every file and directory. On the development VM
(ext4, kernel 6.x) a tree of 2,000 files of 4 KiB took ~310 ms with per-file fsync
(~225 ms with 16 threads) and ~17 ms with one syncfs; for 5 to 200 files syncfs was
still 6 to 8 times cheaper. The price of syncfs is that it also flushes other writers'
dirty data on the same filesystem (256 MiB of unrelated dirty data made one syncfs take
~185 ms), which the kernel's dirty limits bound and which still beats fsyncing a large
tree file by file. Since Linux 5.8 syncfs reports writeback errors as fsync does.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

HASH_CHUNK: Final = 1 << 20
"""Bytes read at a time when hashing (1 MiB)."""

# O_NONBLOCK: opening a FIFO someone put in place of a file must not hang the thread.
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs``, or None where there is none (non-Linux, old libc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    # A ctypes CDLL function releases the GIL while it runs, so other threads go on.
    result: Callable[[int], int] = func
    return result


def syncfs_available() -> bool:
    """True when this process can call ``syncfs(2)``."""
    return _libc_syncfs() is not None


def syncfs(path: Path) -> bool:
    """Flush the whole filesystem holding ``path``; False if syncfs is not usable here.

    Raises ``OSError`` when the kernel reports a writeback error.
    """
    func = _libc_syncfs()
    if func is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if func(fd) != 0:
            err = ctypes.get_errno()
            # ENOSYS: a kernel or sandbox without the system call; fall back quietly.
            if err in (errno.ENOSYS, errno.EPERM):
                return False
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def fsync_path(path: Path | str) -> None:
    """fsync one file or directory (opened read-only, which is enough on Linux)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(top: Path) -> None:
    """fsync every file and directory under ``top`` (``top`` included), never following
    links; directories come after their contents so the entries they record exist."""
    for dirpath, _dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(full).st_mode):
                fsync_path(full)
        fsync_path(dirpath)


def make_durable(top: Path, *extra_files: Path, use_syncfs: bool = True) -> str:
    """Make the tree ``top`` and ``extra_files`` durable; returns the method used.

    With ``use_syncfs`` (and a working syncfs) one call flushes data, inodes and
    directory entries of the filesystem ``top`` lives on; otherwise every file and
    directory is fsynced.
    """
    if use_syncfs and syncfs(top):
        return "syncfs"
    fsync_tree(top)
    for path in extra_files:
        fsync_path(path)
    return "fsync"


def _ignore_missing(func: Callable[..., Any], path: str, exc_info: Any) -> None:
    """``shutil.rmtree`` error hook: a concurrent remover got there first, which is fine."""
    exc = exc_info[1]
    if isinstance(exc, FileNotFoundError):
        return
    raise exc


def _ignore_missing_exc(func: Callable[..., Any], path: str, exc: BaseException) -> None:
    """The Python 3.12+ form of :func:`_ignore_missing`."""
    if isinstance(exc, FileNotFoundError):
        return
    raise exc


def make_writable_and_remove(path: Path) -> None:
    """Remove ``path`` (file, link or directory tree) even when its directories are
    read-only; missing is fine, and so is another process removing it at the same time.

    Directories are made ``0o700`` first, because unlinking needs write permission on
    the parent directory for anyone but root. Links are never followed: ``os.walk``
    does not descend into them and each directory is checked with ``lstat`` before
    ``chmod`` (which would follow a link).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    _make_dirs_writable(path)
    # rmtree works through directory descriptors and never follows links (it refuses
    # a top that is a link, which we ruled out above).
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_ignore_missing_exc)  # onerror is deprecated there
    else:
        shutil.rmtree(path, onerror=_ignore_missing)


def _make_dirs_writable(top: Path) -> None:
    """chmod ``top`` and every real directory below it (not links to one) to 0o700."""

    def _skip_missing(exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):
            raise exc

    with contextlib.suppress(FileNotFoundError):
        os.chmod(top, 0o700)
    # Top-down, so each directory is made readable and searchable before os.walk
    # lists it (which non-root processes need for a 0o555 or 0o000 directory).
    for dirpath, dirnames, _filenames in os.walk(top, onerror=_skip_missing):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(full).st_mode):
                    os.chmod(full, 0o700)


def sha256_fd(fd: int) -> str:
    """Hex SHA-256 of everything readable from ``fd``, in 1 MiB reads."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    while True:
        count = os.readv(fd, [buffer])
        if count == 0:
            return digest.hexdigest()
        digest.update(view[:count])


def open_no_follow(path: str, dir_fd: int | None = None) -> int:
    """Open a file read-only without following a link in its last component."""
    return os.open(path, _READ_FLAGS, dir_fd=dir_fd)
