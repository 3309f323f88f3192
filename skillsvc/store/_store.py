"""The :class:`Store`: layout, path safety, atomic commit, the current link, removal.

The store is about extracted packages; original archives and kept upload bytes are
the blob store's (:mod:`skillsvc.blobs`: ``blobs/`` and ``kept/`` here by default, or a
bucket), so this module only creates those directories and counts their size.

Every method blocks (renames, fsyncs, hashing) and is meant to be called from a worker
thread (``asyncio.to_thread``). Failures of the filesystem become domain errors here:
a full disk is ``ResourceExhausted`` (reason ``STORE_FULL``), anything else the
store cannot do is ``Unavailable`` (reason ``STORE_UNAVAILABLE``).

How a package becomes visible (SPEC §5, STYLE rule 7): the caller extracts it into a
work directory under ``staging/<instance_id>/``; :meth:`Store.seal_package` makes
the tree read-only and flushes it to disk (before the install takes any lock), then
:meth:`Store.place_package` ``rename``\\s it into ``packages/<skill>/<version>/`` and
fsyncs the directories that changed. A rename within one filesystem is atomic, so a
final path either does not exist or holds a complete tree. Removal runs the other way:
rename out of ``packages/`` into ``staging/.trash/`` (the version is gone at that
instant), then delete at leisure.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from skillsvc.core.naming import SKILL_NAME_RULE, is_valid_semver, is_valid_skill_name
from skillsvc.errors import (
    STORE_FULL_REASON,
    STORE_UNAVAILABLE_REASON,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SkillsvcError,
    Unavailable,
)
from skillsvc.store import _fsops
from skillsvc.store._verify import verify_tree

# Instance ids and work directory names: one path component that cannot be "." or
# "..", cannot hide (a leading "." is reserved for the store's own entries such as
# ".trash" and ".probe-*") and fits comfortably in NAME_MAX.
_STAGING_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")

CURRENT: Final = "current"
"""Name of the symlink to the current version inside ``packages/<skill>/``. It can
never clash with a version directory: "current" is not a semantic version."""

_TRASH: Final = ".trash"
# Per-skill lock files of the processes of this host (see Store.lock_path).
_LOCKS: Final = "locks"
# Inside an instance's staging: directories moved out of packages/ whose deletion has
# not been confirmed by the database yet.
_STASH: Final = "stash"
_CURRENT_TMP_PREFIX: Final = ".current-"
_MARK_TMP_PREFIX: Final = ".mark-"
_MARK_SUFFIX: Final = ".sha256"
_FILE_MODE: Final = 0o444
_EXEC_FILE_MODE: Final = 0o555
_DIR_MODE: Final = 0o555
_PRIVATE_DIR_MODE: Final = 0o700


def store_error(exc: OSError, action: str) -> SkillsvcError:
    """The domain error for a filesystem failure while doing ``action``."""
    detail = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(
            f"no space left in the file store to {action} ({detail})", reason=STORE_FULL_REASON
        )
    return Unavailable(
        f"the file store could not {action}: {detail}", reason=STORE_UNAVAILABLE_REASON
    )


@contextlib.contextmanager
def os_errors(action: str) -> Iterator[None]:
    """Translate ``OSError`` raised inside the block into a domain error, once."""
    try:
        yield
    except OSError as exc:
        raise store_error(exc, action) from exc


def _staging_name(value: str, field: str) -> str:
    if not _STAGING_NAME.fullmatch(value):
        raise InvalidArgument.field(
            field,
            "must be 1-128 characters of A-Z, a-z, 0-9, '_', '.' and '-', "
            "starting with a letter or digit",
        )
    return value


def _resolve(path: Path, field: str) -> Path:
    """``path.resolve()`` with a link loop reported as a refused path."""
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop before 3.13
        raise InvalidArgument.field(field, "cannot be resolved inside the store") from exc


class HostLock:
    """An open lock file of :meth:`Store.host_lock`: one holder per skill per host.

    The ``flock`` is taken without blocking (:meth:`try_acquire`) so an event loop can
    poll for it, and released when the file is closed (:meth:`close`, or leaving a
    ``with`` block), also by the kernel should the process die.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def try_acquire(self) -> bool:
        """Take the lock if nobody on this host holds it; False if somebody does."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise store_error(exc, "lock a skill") from exc
        return True

    def close(self) -> None:
        """Release the lock (if held) and close the file; idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> HostLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Store:
    """The file store under ``root`` (SPEC §5).

    Several server processes may share one store; each works in its own
    ``staging/<instance_id>/`` and the database decides who may commit, activate or
    remove which skill version, so the store itself takes no locks.
    """

    def __init__(self, root: Path, *, use_syncfs: bool = True) -> None:
        self.root = root
        """The store's root directory."""
        self.packages = root / "packages"
        """``packages/``: one directory per skill, one read-only tree per version."""
        self.blobs = root / "blobs" / "sha256"
        """``blobs/sha256/``: original archives named by their SHA-256."""
        self.kept = root / "kept" / "sha256"
        """``kept/sha256/``: bytes of failed uploads, kept for Retry until gc."""
        self.staging = root / "staging"
        """``staging/``: private work area on the same filesystem, for atomic renames."""
        self.trash = self.staging / _TRASH
        """Where removed trees wait to be deleted, out of ``packages/`` already."""
        self.use_syncfs = use_syncfs
        """Flush committed trees with one ``syncfs`` instead of fsyncing every file
        (see :mod:`skillsvc.store._fsops`); falls back to fsync where unavailable."""

    # -- layout and health -------------------------------------------------------------

    def init(self) -> None:
        """Create the layout (idempotent) with private permissions on staging.

        Raises ``Unavailable`` unless packages, blobs and staging share one filesystem:
        every commit and removal is a ``rename`` between them.
        """
        with os_errors("create its directories"):
            for directory in (self.packages, self.blobs, self.kept):
                directory.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR_MODE)
            devices = {os.stat(d).st_dev for d in (self.packages, self.blobs, self.staging)}
        if len(devices) != 1:
            raise Unavailable(
                "the store's packages/, blobs/ and staging/ must be on one filesystem",
                reason="STORE_MISCONFIGURED",
            )

    def probe(self) -> None:
        """Raise Unavailable unless the store can be written (blocking; run in a thread)."""
        probe = self.staging / f".probe-{uuid.uuid4().hex}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise Unavailable(
                f"the file store is not writable: {exc.strerror}", reason=STORE_UNAVAILABLE_REASON
            ) from exc

    # -- staging -----------------------------------------------------------------------

    def instance_staging(self, instance_id: str) -> Path:
        """``staging/<instance_id>/`` (mode 0o700), created if needed."""
        path = self.staging / _staging_name(instance_id, "instance_id")
        with os_errors("create a staging directory"):
            self.staging.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR_MODE)
            try:
                os.mkdir(path, _PRIVATE_DIR_MODE)
                os.chmod(path, _PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise Internal(f"staging entry {instance_id} is not a directory")
        return path

    def new_work_dir(self, instance_id: str, name: str) -> Path:
        """A new, empty private directory ``staging/<instance_id>/<name>/`` (0o700).

        Raises ``Internal`` if it exists already: callers pick unique names (an
        operation id), so an existing one means two tasks share a name.
        """
        parent = self.instance_staging(instance_id)
        path = parent / _staging_name(name, "name")
        with os_errors("create a work directory"):
            try:
                os.mkdir(path, _PRIVATE_DIR_MODE)
            except FileExistsError as exc:
                raise Internal(f"staging work directory {instance_id}/{name} exists") from exc
            os.chmod(path, _PRIVATE_DIR_MODE)
        return path

    def remove_instance_staging(self, instance_id: str) -> None:
        """Delete one instance's staging directory, read-only trees included.

        Only for an instance known to be dead (or this one at start-up): a live
        instance's work in progress would vanish. Missing is fine.
        """
        path = self.staging / _staging_name(instance_id, "instance_id")
        with os_errors("remove a staging directory"):
            _fsops.make_writable_and_remove(path)

    def staging_instances(self) -> list[str]:
        """Instance ids that have a staging directory, sorted."""
        with os_errors("list staging"):
            try:
                entries = list(os.scandir(self.staging))
            except FileNotFoundError:
                return []
        return sorted(
            entry.name
            for entry in entries
            if _STAGING_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        )

    def purge_trash(self) -> int:
        """Delete whatever removals left in ``staging/.trash/`` (a crash mid-delete).

        Safe at any time, even while another instance deletes its own trash: both
        sides treat an entry that vanished as done. Returns the number of entries.
        """
        with os_errors("empty the trash"):
            try:
                entries = list(os.scandir(self.trash))
            except FileNotFoundError:
                return 0
            for entry in entries:
                _fsops.make_writable_and_remove(Path(entry.path))
        return len(entries)

    def make_writable_and_remove(self, path: Path) -> None:
        """Remove ``path`` inside the store even if it holds read-only directories.

        Missing is fine; a link is removed, never followed. Refuses paths outside the
        root and the layout directories themselves.
        """
        if path.name in ("", ".", ".."):
            raise InvalidArgument.field("path", "must name an entry inside the store")
        real = _resolve(path.parent, "path") / path.name
        root = _resolve(self.root, "path")
        protected = {
            root,
            *(_resolve(p, "path") for p in (self.packages, self.blobs.parent, self.blobs)),
            _resolve(self.staging, "path"),
        }
        if real in protected or not real.is_relative_to(root):
            raise InvalidArgument.field("path", "must be an entry inside the store")
        with os_errors("remove a directory"):
            _fsops.make_writable_and_remove(real)

    # -- paths -------------------------------------------------------------------------

    def _confined(self, path: Path, base: Path, field: str) -> Path:
        """``path`` after checking it resolves to exactly where its name says, under
        ``base``: no component of it may be a link (or ``..``) leading elsewhere."""
        expected = _resolve(base, field).joinpath(*path.relative_to(base).parts)
        if _resolve(path, field) != expected:
            raise InvalidArgument.field(field, "leads outside its place in the store")
        return path

    def _skill_path(self, skill_id: str) -> Path:
        if not is_valid_skill_name(skill_id):
            raise InvalidArgument.field("skill_id", SKILL_NAME_RULE)
        return self.packages / skill_id

    def _version_path(self, skill_id: str, version: str) -> Path:
        skill_dir = self._skill_path(skill_id)
        if not is_valid_semver(version):
            raise InvalidArgument.field("version", "must be a semantic version (semver 2.0.0)")
        return skill_dir / version

    def skill_dir(self, skill_id: str) -> Path:
        """``packages/<skill_id>/``; refuses an invalid id (``InvalidArgument``)."""
        return self._confined(self._skill_path(skill_id), self.packages, "skill_id")

    def version_dir(self, skill_id: str, version: str) -> Path:
        """``packages/<skill_id>/<version>/``; refuses invalid ids and versions."""
        self.skill_dir(skill_id)
        return self._confined(self._version_path(skill_id, version), self.packages, "version")

    def current_link(self, skill_id: str) -> Path:
        """``packages/<skill_id>/current`` (a symlink to the current version, if any)."""
        return self.skill_dir(skill_id) / CURRENT

    def _staged(self, path: Path, field: str, *, directory: bool) -> Path:
        """``path`` resolved, after checking it is a directory (or regular file) of its
        own, not a link, strictly inside staging."""
        staging = _resolve(self.staging, field)
        real = _resolve(path, field)
        if real == staging or not real.is_relative_to(staging):
            raise InvalidArgument.field(field, "must be inside the store's staging directory")
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError as exc:
            raise InvalidArgument.field(field, "does not exist") from exc
        wanted = stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)
        if not wanted:
            kind = "a directory" if directory else "a regular file"
            raise InvalidArgument.field(field, f"must be {kind} (links are not followed)")
        return real

    # -- commit ------------------------------------------------------------------------

    def commit_package(
        self, tree: Path, skill_id: str, version: str, *, sha256: str | None = None
    ) -> Path:
        """:meth:`seal_package` then :meth:`place_package`; returns the version directory.

        Names are checked before anything is touched.
        """
        self.version_dir(skill_id, version)
        self.seal_package(tree)
        return self.place_package(tree, skill_id, version, sha256=sha256)

    def seal_package(self, tree: Path) -> None:
        """Make a staged package tree read-only and flush it to disk.

        ``tree`` is a directory inside staging. Files become 0o444, or 0o555 when any
        execute bit was set; directories 0o555. This is the slow part of a commit (an
        fsync or syncfs): the install does it before it takes a lock or a pooled
        connection, so that :meth:`place_package`, under the locks, only renames.

        Only regular files and directories are accepted in the tree.
        """
        tree = self._staged(tree, "tree", directory=True)
        with os_errors("commit the package"):
            _seal_tree(tree)
            # Modes are set before the flush so they are as durable as the data.
            _fsops.make_durable(tree, use_syncfs=self.use_syncfs)

    def place_package(
        self, tree: Path, skill_id: str, version: str, sha256: str | None = None
    ) -> Path:
        """Move a sealed tree (see :meth:`seal_package`) into place; returns its directory.

        ``tree`` is consumed. A version directory already at the final path (left by a
        crash after the rename but before the database recorded the version as ready)
        is replaced. The original archive is the blob store's (:mod:`skillsvc.blobs`),
        stored before this is called. ``sha256`` is that archive's digest, recorded
        beside the tree (:meth:`placed_sha256`); without it the tree is left unmarked.
        """
        target = self.version_dir(skill_id, version)
        tree = self._staged(tree, "tree", directory=True)
        with os_errors("commit the package"):
            self._place(tree, target, sha256)
        return target

    def place_version(self, tree: Path, skill_id: str, version: str, sha256: str) -> bool:
        """Move a sealed, materialised tree (see :meth:`seal_package`) into place.

        An existing ``packages/<skill>/<version>/`` placed from the same archive
        (``sha256``) is kept (another process of this host placed or installed it
        meanwhile): then ``tree`` is left to the caller and False is returned. One from
        another archive, or unmarked, is replaced: the caller holds the skill's lock
        and has just read that the version's bytes are ``sha256``'s.
        """
        target = self.version_dir(skill_id, version)
        tree = self._staged(tree, "tree", directory=True)
        with os_errors("place the package"):
            if _lstat_mode(target) and _read_mark(_mark_path(target)) == sha256:
                return False
            self._place(tree, target, sha256)
        return True

    def _place(self, tree: Path, target: Path, sha256: str | None) -> None:
        """Rename ``tree`` to ``target`` and record where it came from, in an order a
        crash cannot turn into a tree with another archive's mark: the old tree and
        mark go (durably) before the new tree appears, and the new mark comes last."""
        skill_dir = target.parent
        mark = _mark_path(target)
        if _ensure_dir(skill_dir):
            _fsops.fsync_path(self.packages)
        leftover = self._move_to_trash(target) if _lstat_mode(target) else None
        if _drop_mark(mark) or leftover is not None:
            _fsops.fsync_path(skill_dir)
        os.rename(tree, target)
        # The top directory stays writable until here: for anyone but root, moving
        # a directory to another parent needs write access to it (to update "..").
        os.chmod(target, _DIR_MODE)
        if sha256:
            _write_mark(mark, sha256)
        _fsops.fsync_path(target)
        _fsops.fsync_path(skill_dir)  # one flush for the rename and the mark
        if leftover is not None:
            _fsops.make_writable_and_remove(leftover)

    def placed_sha256(self, skill_id: str, version: str) -> str | None:
        """The SHA-256 of the archive ``packages/<skill>/<version>/`` was placed from.

        Recorded by :meth:`place_package` and :meth:`place_version` as a symbolic link
        ``packages/<skill>/.<version>.sha256`` whose target is the hex digest (one
        atomic ``symlink``, no data block to flush, not counted by :meth:`usage_bytes`,
        kept by backups as links are). None when the tree is unmarked (placed by an
        older release or by ``fsck --repair``) or absent: the name of a version says
        nothing about its bytes once a version can be deleted and installed again.
        """
        with os_errors("read a package's origin"):
            return _read_mark(_mark_path(self.version_dir(skill_id, version)))

    def placed(self, skill_id: str) -> dict[str, str | None] | None:
        """Each version directory under ``packages/<skill_id>/`` with its
        :meth:`placed_sha256`; None when the skill has no directory here."""
        skill_dir = self.skill_dir(skill_id)
        with os_errors("list packages"):
            if not _lstat_mode(skill_dir):
                return None
            return {
                version: _read_mark(_mark_path(skill_dir / version))
                for version in self.versions_on_disk_of(skill_id)
            }

    def mark_placed(self, skill_id: str, version: str, sha256: str) -> None:
        """Record that the tree of ``version`` holds ``sha256``'s files (the caller
        checked them against the digests recorded at install, under the skill's lock)."""
        target = self.version_dir(skill_id, version)
        with os_errors("mark the package"):
            if not stat.S_ISDIR(_lstat_mode(target)):
                raise NotFound(
                    f"version {version} of skill {skill_id} is not in the file store",
                    reason="PACKAGE_FILES_MISSING",
                )
            _write_mark(_mark_path(target), sha256)
            _fsops.fsync_path(target.parent)

    def lock_path(self, skill_id: str) -> Path:
        """``locks/<skill_id>``: a file processes of this host ``flock`` to
        materialise a skill one at a time (created if needed; never removed, since
        removing a lock file races with whoever opens it next)."""
        if not is_valid_skill_name(skill_id):
            raise InvalidArgument.field("skill_id", SKILL_NAME_RULE)
        locks = self.root / _LOCKS
        with os_errors("create a lock file"):
            locks.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        return locks / skill_id

    def host_lock(self, skill_id: str) -> HostLock:
        """Open ``locks/<skill_id>`` (see :meth:`lock_path`), not yet locked."""
        path = self.lock_path(skill_id)
        with os_errors("open a lock file"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        return HostLock(fd)

    def space(self) -> tuple[int, int]:
        """``(free, total)`` bytes of the store's filesystem (free as a non-root writer sees it)."""
        with os_errors("measure its filesystem"):
            st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def versions_on_disk(self) -> dict[str, list[str]]:
        """skill → the version directories present under ``packages/`` (links excluded)."""
        found: dict[str, list[str]] = {}
        with os_errors("list packages"):
            try:
                skills = list(os.scandir(self.packages))
            except FileNotFoundError:
                return {}
            for skill in skills:
                if not skill.is_dir(follow_symlinks=False):
                    continue
                found[skill.name] = sorted(
                    v.name
                    for v in os.scandir(skill.path)
                    if v.is_dir(follow_symlinks=False) and is_valid_semver(v.name)
                )
        return found

    def versions_on_disk_of(self, skill_id: str) -> list[str]:
        """The version directories present under ``packages/<skill_id>/``, sorted."""
        skill_dir = self.skill_dir(skill_id)
        with os_errors("list packages"):
            try:
                entries = list(os.scandir(skill_dir))
            except (FileNotFoundError, NotADirectoryError):
                return []
        return sorted(
            v.name for v in entries if v.is_dir(follow_symlinks=False) and is_valid_semver(v.name)
        )

    # -- deletion that a crash cannot half-do -----------------------------------------

    def stash(self, instance_id: str, skill_id: str, version: str | None = None) -> Path | None:
        """Move a version's (or a whole skill's) directory out of ``packages/`` at once.

        It goes to ``staging/<instance>/stash/`` under a name that records what it was,
        so that if the process dies before the database change that goes with it
        commits, recovery can put it back (:meth:`unstash`) or finish the job
        (:meth:`purge`). Returns None when there was nothing to move.
        """
        target = (
            self.skill_dir(skill_id) if version is None else self.version_dir(skill_id, version)
        )
        if version is not None and self.current_version(skill_id) == version:
            raise FailedPrecondition(
                f"version {version} is the current version of skill {skill_id}",
                reason="VERSION_IS_CURRENT",
            )
        with os_errors("move the package out of the store"):
            if not _lstat_mode(target):
                return None
            stash_dir = self.instance_staging(instance_id) / _STASH
            stash_dir.mkdir(mode=_PRIVATE_DIR_MODE, exist_ok=True)
            name = f"{skill_id}@{version or ''}#{uuid.uuid4().hex[:12]}"
            dest = stash_dir / name
            mode = os.lstat(target).st_mode
            if stat.S_ISDIR(mode) and not mode & stat.S_IWUSR:
                os.chmod(target, stat.S_IMODE(mode) | stat.S_IWUSR)
            os.rename(target, dest)
            if version is not None:
                # Put back (unstash), the tree is unmarked: checked before it is trusted.
                _drop_mark(_mark_path(target))
            _fsops.fsync_path(target.parent)
            _fsops.fsync_path(stash_dir)
        return dest

    def stashed(self, instance_id: str) -> list[tuple[Path, str, str | None]]:
        """An instance's stashed directories as ``(path, skill_id, version or None)``."""
        stash_dir = self.staging / _staging_name(instance_id, "instance_id") / _STASH
        found: list[tuple[Path, str, str | None]] = []
        with os_errors("list stashed packages"):
            try:
                entries = list(os.scandir(stash_dir))
            except FileNotFoundError:
                return []
        for entry in entries:
            what, _, _suffix = entry.name.partition("#")
            skill_id, _, version = what.partition("@")
            if is_valid_skill_name(skill_id) and (not version or is_valid_semver(version)):
                found.append((Path(entry.path), skill_id, version or None))
        return found

    def unstash(self, path: Path, skill_id: str, version: str | None) -> bool:
        """Put a stashed directory back where it was; False if that place is taken."""
        target = (
            self.skill_dir(skill_id) if version is None else self.version_dir(skill_id, version)
        )
        with os_errors("restore the package"):
            if _lstat_mode(target):
                return False
            _ensure_dir(target.parent)
            os.rename(path, target)
            if version is not None:
                os.chmod(target, _DIR_MODE)
            _fsops.fsync_path(target.parent)
        return True

    def purge(self, path: Path) -> None:
        """Delete a stashed directory for good."""
        if not path.resolve().is_relative_to(self.staging.resolve()):
            raise InvalidArgument.field("path", "must be inside staging")
        with os_errors("delete the stashed package"):
            _fsops.make_writable_and_remove(path)

    def _move_to_trash(self, path: Path) -> Path:
        """Rename ``path`` into ``staging/.trash/`` and return where it went."""
        self.trash.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        dest = self.trash / uuid.uuid4().hex
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IWUSR:
            # Moving a directory to another parent needs write access to it (non-root).
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IWUSR)
        os.rename(path, dest)
        return dest

    # -- the current version -----------------------------------------------------------

    def activate(self, skill_id: str, version: str) -> None:
        """Point ``packages/<skill>/current`` at ``<version>`` atomically.

        A new relative link is created under a unique name beside ``current`` and
        renamed over it, so readers of ``current/...`` always see the old or the new
        version, never no link. Raises ``NotFound`` if the version is not in the store.
        """
        target = self.version_dir(skill_id, version)
        skill_dir = target.parent
        if not stat.S_ISDIR(_lstat_mode(target)):
            raise NotFound(
                f"version {version} of skill {skill_id} is not in the file store",
                reason="PACKAGE_FILES_MISSING",
            )
        temporary = skill_dir / f"{_CURRENT_TMP_PREFIX}{uuid.uuid4().hex}"
        with os_errors("activate the version"):
            os.symlink(version, temporary)
            try:
                os.replace(temporary, skill_dir / CURRENT)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            _fsops.fsync_path(skill_dir)

    def current_version(self, skill_id: str) -> str | None:
        """The version ``current`` points at, or None when there is no link."""
        link = self.current_link(skill_id)
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise Internal(f"{CURRENT} of skill {skill_id} is not a symlink") from exc
            raise store_error(exc, "read the current version") from exc
        if not is_valid_semver(target):
            raise Internal(f"{CURRENT} of skill {skill_id} points at {target!r}")
        return target

    def deactivate(self, skill_id: str) -> None:
        """Remove ``packages/<skill>/current`` (the skill has no current version)."""
        link = self.current_link(skill_id)
        with os_errors("deactivate the skill"):
            try:
                os.unlink(link)
            except FileNotFoundError:
                return
            _fsops.fsync_path(link.parent)

    # -- removal -----------------------------------------------------------------------

    def remove_version(self, skill_id: str, version: str) -> None:
        """Remove one version's tree; missing is fine.

        Refuses (``FailedPrecondition``) the version ``current`` points at, which
        would leave a dangling link: switch or :meth:`deactivate` first.
        """
        target = self.version_dir(skill_id, version)
        if self.current_version(skill_id) == version:
            raise FailedPrecondition(
                f"version {version} is the current version of skill {skill_id}",
                reason="VERSION_IS_CURRENT",
            )
        with os_errors("remove the version"):
            dropped = _drop_mark(_mark_path(target))
            if not _lstat_mode(target):
                if dropped:
                    _fsops.fsync_path(target.parent)
                return
            trash = self._move_to_trash(target)
            _fsops.fsync_path(target.parent)
            _fsops.make_writable_and_remove(trash)

    def remove_skill(self, skill_id: str) -> None:
        """Remove a skill's directory: every version and ``current``. Missing is fine."""
        skill_dir = self.skill_dir(skill_id)
        with os_errors("remove the skill"):
            if not _lstat_mode(skill_dir):
                return
            trash = self._move_to_trash(skill_dir)
            _fsops.fsync_path(self.packages)
            _fsops.make_writable_and_remove(trash)

    # -- reading -----------------------------------------------------------------------

    def verify_tree(
        self, skill_id: str, version: str, files: Sequence[tuple[str, int, str]]
    ) -> list[str]:
        """Compare an installed tree with ``(relative_path, size, sha256)`` recorded at
        install; returns human-readable problems, empty when the tree is intact."""
        target = self._version_path(skill_id, version)
        try:
            self._confined(target, self.packages, "version")
        except InvalidArgument:
            # The names are fine (checked above) but a link on disk leads elsewhere:
            # that is damage to report, not a bad request.
            return ["the version directory leads outside the store (a symbolic link?)"]
        with os_errors("verify the package"):
            return verify_tree(target, files)

    def usage_bytes(self) -> int:
        """Total size of the regular files under ``packages/``, ``blobs/`` and ``kept/``."""
        total = 0
        with os_errors("measure its size"):
            for top in (self.packages, self.blobs.parent, self.kept.parent):
                total += _regular_bytes(top)
        return total


def _lstat_mode(path: Path) -> int:
    """``st_mode`` of ``path`` itself, or 0 when it does not exist."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _mark_path(version_dir: Path) -> Path:
    """``packages/<skill>/.<version>.sha256`` beside ``packages/<skill>/<version>/``."""
    return version_dir.parent / f".{version_dir.name}{_MARK_SUFFIX}"


def _read_mark(mark: Path) -> str | None:
    try:
        value = os.readlink(mark)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a link: not ours, so no mark
            return None
        raise
    return value if _SHA256_HEX.fullmatch(value) else None


def _write_mark(mark: Path, sha256: str) -> None:
    """Create or replace the link ``mark`` -> ``sha256`` atomically (not flushed)."""
    if not _SHA256_HEX.fullmatch(sha256):
        raise InvalidArgument.field("sha256", "must be 64 lower-case hex digits")
    temporary = mark.parent / f"{_MARK_TMP_PREFIX}{uuid.uuid4().hex}"
    os.symlink(sha256, temporary)
    try:
        os.replace(temporary, mark)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _drop_mark(mark: Path) -> bool:
    """Remove ``mark`` if present; True when there was one (not flushed)."""
    try:
        os.unlink(mark)
    except FileNotFoundError:
        return False
    return True


def _ensure_dir(path: Path) -> bool:
    """Create the directory ``path`` unless it exists; True when created."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return False
    return True


def _seal_tree(top: Path) -> None:
    """Make everything below ``top`` read-only (``top`` itself is the caller's job).

    Refuses anything but regular files and directories: the extractor never creates
    links or devices, so one here means the tree did not come from it.
    """
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(full, _DIR_MODE)
            elif stat.S_ISREG(mode):
                os.chmod(full, _EXEC_FILE_MODE if mode & 0o111 else _FILE_MODE)
            else:
                rel = os.path.relpath(full, top)
                raise InvalidArgument.field(
                    "tree", f"{rel} is neither a regular file nor a directory"
                )


def _regular_bytes(top: Path) -> int:
    """Sum of ``lstat`` sizes of regular files below ``top``; entries removed while
    we walk (a concurrent removal) are skipped."""
    total = 0
    stack = [str(top)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total
