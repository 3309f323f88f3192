"""Entry-name normalisation and collision detection.

Every member name is reduced to a tuple of path components before anything touches the
disk, and every accepted name is registered in a :class:`NameTable` keyed by its
case-folded NFC form. That is what makes ``./SKILL.md``, ``skill.md`` and a decomposed
Unicode spelling of a name count as the same file: on a case-insensitive or
normalising filesystem they would be, and on any filesystem a reader could be tricked
into looking at the "other" copy.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from ._model import Code, Limits

# Filesystems (ext4, xfs, tmpfs) refuse longer single components with ENAMETOOLONG; a
# hostile name must become BAD_PATH, not an OSError, even if max_path_bytes is raised.
MAX_COMPONENT_BYTES: Final = 255

_DRIVE: Final = re.compile(r"[A-Za-z]:")
# C0/C1 controls, and line/paragraph separators, which break a name across log lines.
_CONTROL_CATEGORIES: Final = frozenset({"Cc", "Zl", "Zp"})
# Bidirectional embedding/override/isolate controls: they make a listed name read as a
# different one ("evil\u202etxt.sh" displays as "evilhs.txt").
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ALIAS: Final = "equal once case-folded and NFC-normalised"
# Tools that zip a folder on macOS add AppleDouble metadata under this top-level folder.
# It is never skill content, and keeping it would defeat single-folder stripping.
IGNORED_TOP_LEVEL: Final = "__MACOSX"


class PathError(Exception):
    """An entry name that is refused; carries the violation code."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalize(name: str, *, is_dir: bool, limits: Limits) -> tuple[str, ...]:
    """Split ``name`` into safe components, or raise PathError.

    ``.`` components and repeated slashes are dropped; ``..`` is refused outright rather
    than resolved, because resolving is exactly what lets two spellings alias. An empty
    result means the archive root itself (e.g. a ``./`` directory entry).
    """
    if not name:
        raise PathError(Code.BAD_PATH, "empty entry name")
    # isprintable() is False for every character refused here, so the per-character scan
    # only runs for the rare names that need it.
    for ch in "" if name.isprintable() else name:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise PathError(Code.BAD_PATH, "entry name is not valid UTF-8")
        if ch == "\0":
            raise PathError(Code.BAD_PATH, "entry name contains a NUL byte")
        if category in _CONTROL_CATEGORIES or ch in _BIDI_CONTROLS:
            raise PathError(
                Code.BAD_PATH, f"entry name contains the control character U+{ord(ch):04X}"
            )
    if "\\" in name:
        raise PathError(Code.BAD_PATH, "entry name contains a backslash")
    if _DRIVE.match(name):
        raise PathError(Code.BAD_PATH, "entry name starts with a drive letter")
    if name.startswith("/"):
        raise PathError(Code.ABSOLUTE_PATH, "entry name is an absolute path")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise PathError(Code.PATH_TRAVERSAL, "entry name contains a '..' component")
    if not is_dir and name.endswith("/"):
        raise PathError(Code.BAD_PATH, "file entry name ends with '/'")
    if len(parts) > limits.max_depth:
        raise PathError(
            Code.BAD_PATH, f"entry is {len(parts)} levels deep (limit {limits.max_depth})"
        )
    size = len("/".join(parts).encode("utf-8"))
    if size > limits.max_path_bytes:
        raise PathError(
            Code.BAD_PATH, f"entry path is {size} bytes long (limit {limits.max_path_bytes})"
        )
    if any(len(part.encode("utf-8")) > MAX_COMPONENT_BYTES for part in parts):
        raise PathError(
            Code.BAD_PATH, f"a path component is longer than {MAX_COMPONENT_BYTES} bytes"
        )
    return parts


def is_ignored(name: str) -> bool:
    """Whether the extractor skips this entry (it lives under ``__MACOSX/``)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return bool(parts) and parts[0] == IGNORED_TOP_LEVEL


def fold(path: str) -> str:
    """The key two names collide on: NFC, case-folded, NFC again.

    Case folding can produce decomposed sequences, hence the second normalisation (this
    is Unicode's "canonical caseless match").
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())


class NameTable:
    """Remembers every accepted name and refuses those that collide with one."""

    def __init__(self) -> None:
        # folded key -> the exact path first seen under it
        self._files: dict[str, str] = {}
        self._dirs: dict[str, str] = {}

    def claim(self, parts: tuple[str, ...], *, is_dir: bool) -> str | None:
        """Register ``parts``; return a message describing the collision, if any.

        Files, links and special entries all claim a *file* name (a refused symlink
        ``link`` still makes ``link/evil`` a collision). Two directory entries with the
        same exact name are harmless and allowed.
        """
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for prefix in prefixes:
            key = fold(prefix)
            if key in self._files:
                return f"'{self._files[key]}' is both a file and a directory"
            seen = self._dirs.get(key)
            if seen is not None and seen != prefix:
                return f"directory '{prefix}' collides with '{seen}' ({_ALIAS})"
        path = "/".join(parts)
        key = fold(path)
        seen_file = self._files.get(key)
        seen_dir = self._dirs.get(key)
        if is_dir:
            if seen_file is not None:
                return f"'{path}' is both a file and a directory"
            if seen_dir is not None and seen_dir != path:
                return f"directory '{path}' collides with '{seen_dir}' ({_ALIAS})"
        else:
            if seen_file is not None:
                if seen_file == path:
                    return f"'{path}' appears more than once"
                return f"'{path}' collides with '{seen_file}' ({_ALIAS})"
            if seen_dir is not None:
                return f"'{path}' is both a file and a directory"
        for prefix in prefixes:
            self._dirs.setdefault(fold(prefix), prefix)
        if is_dir:
            self._dirs.setdefault(key, path)
        else:
            self._files[key] = path
        return None
