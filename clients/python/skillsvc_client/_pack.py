"""Turning what the caller has (a folder, an archive file, bytes) into upload bytes.

:func:`pack_folder` makes a ``.tar.gz`` that depends only on the folder's file names,
contents and executable bits: entries sorted by path, every time fixed, owners and
groups blank, modes ``0644``/``0755``, the gzip header without name or time, and
``.git``, ``__pycache__`` and ``.DS_Store`` left out. Packing the same folder twice
therefore gives the same sha256, which the server uses to recognise a re-upload of an
installed version as a no-op.

Archives are held in memory: skill packages are small (the server's default limit is
100 MiB) and the bytes are needed twice, once to hash them and once to send them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from skillsvc_client._errors import LocalError

IGNORED_NAMES: Final = frozenset({".git", "__pycache__", ".DS_Store"})
"""Names skipped wherever they appear in a packed folder."""
FIXED_MTIME: Final = 315_532_800  # 1980-01-01, the earliest time a zip entry can carry
_SKILL_MD: Final = "SKILL.md"
_MAX_SKILL_MD: Final = 1 << 20


@dataclass(frozen=True)
class Package:
    """Archive bytes ready to upload, with what the client learned from them."""

    data: bytes
    """The archive."""
    sha256: str
    """Hex digest of :attr:`data`, sent as the expected digest."""
    name: str
    """``name`` from the package's SKILL.md front matter (``""`` if not found)."""
    description: str
    """``description`` from the front matter (``""`` if not found)."""


def pack_folder(folder: str | os.PathLike[str]) -> bytes:
    """A deterministic ``.tar.gz`` of ``folder``'s contents (files at the archive root)."""
    root = Path(folder)
    if not (root / _SKILL_MD).is_file():
        raise LocalError(f"{root}: no {_SKILL_MD} in this folder")
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_NAMES)
        base = Path(dirpath)
        for name in filenames:
            if name in IGNORED_NAMES:
                continue
            files.append(((base / name).relative_to(root).as_posix(), base / name))
        for name in dirnames:
            if (base / name).is_symlink():
                raise LocalError(f"{base / name}: symbolic links cannot be packaged")
    files.sort()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path in files:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise LocalError(f"{path}: symbolic links cannot be packaged")
            if not stat.S_ISREG(st.st_mode):
                raise LocalError(f"{path}: only regular files can be packaged")
            info = tarfile.TarInfo(arcname)
            info.size = st.st_size
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def load(source: str | os.PathLike[str] | bytes) -> Package:
    """A :class:`Package` from archive bytes, an archive file or a skill folder."""
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        try:
            data = pack_folder(path) if path.is_dir() else path.read_bytes()
        except FileNotFoundError:
            raise LocalError(f"{path}: no such file or folder") from None
        except PermissionError:
            raise LocalError(f"{path}: permission denied") from None
        except IsADirectoryError:
            raise LocalError(f"{path}: is a folder") from None
        except OSError as exc:
            raise LocalError(f"{path}: {exc.strerror or exc}") from None
    front = _front_matter(_skill_md(data))
    return Package(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        name=front.get("name", ""),
        description=front.get("description", ""),
    )


def _pick(names: list[str]) -> str | None:
    """The SKILL.md the server would read: at the root or in the single top folder."""
    clean = [n.removeprefix("./").rstrip("/") for n in names]
    if _SKILL_MD in clean:
        return names[clean.index(_SKILL_MD)]
    tops = {n.split("/", 1)[0] for n in clean if n}
    if len(tops) == 1:
        wanted = f"{tops.pop()}/{_SKILL_MD}"
        if wanted in clean:
            return names[clean.index(wanted)]
    return None


def _skill_md(data: bytes) -> str:
    """SKILL.md's text inside archive ``data``, or ``""`` (the server judges the rest)."""
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                member = _pick(zf.namelist())
                if member is None:
                    return ""
                with zf.open(member) as handle:
                    return handle.read(_MAX_SKILL_MD).decode("utf-8", "replace")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
            member = _pick([m.name for m in members])
            if member is None:
                return ""
            extracted = tf.extractfile(member)
            if extracted is None:
                return ""
            return extracted.read(_MAX_SKILL_MD).decode("utf-8", "replace")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError):
        return ""


def _front_matter(text: str) -> dict[str, str]:
    """Top-level ``key: value`` scalars of YAML front matter, enough to name the skill.

    Deliberately small (no YAML library on the client): the server parses the
    package for real; this only supplies defaults such as the skill id.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    found: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() in ("---", "..."):
            break
        if line[:1].isspace() or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found.setdefault(key.strip(), value)
    return found
