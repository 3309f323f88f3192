"""Skill archives for the benchmark, built in memory before anything is timed.

Small packages are five text files of ~10 KiB in all. Large packages are one file of
incompressible bytes plus ``SKILL.md``; the big member comes first in the tar so that
the gzip stream of its bytes can be computed once and shared by every version (a
copied ``zlib.compressobj`` finishes each archive with its own ``SKILL.md``). Every
archive is a valid ``.tar.gz`` for both the service and ``tar xzf``.
"""

from __future__ import annotations

import io
import random
import tarfile
import zlib
from dataclasses import dataclass

MiB = 1024 * 1024
CHUNK_BYTES = MiB
"""Upload chunk size (the README recommends 1 MiB)."""

_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z: fixed, so archives are reproducible
_WORDS = (
    "skill",
    "agent",
    "tool",
    "file",
    "read",
    "write",
    "parse",
    "table",
    "page",
    "text",
    "extract",
    "format",
    "check",
    "input",
    "output",
    "value",
    "error",
    "retry",
    "cache",
    "index",
    "query",
    "result",
    "token",
    "model",
    "prompt",
)


def skill_md(name: str, version: str, description: str = "A benchmark skill") -> bytes:
    """A SKILL.md whose front matter names ``name`` and ``version``."""
    return (
        f'---\nname: {name}\ndescription: {description}\nversion: "{version}"\n---\n\n'
        f"# {name}\n\nUse it to benchmark the service.\n"
    ).encode()


def _prose(rng: random.Random, size: int) -> bytes:
    words: list[str] = []
    total = 0
    while total < size:
        word = rng.choice(_WORDS)
        words.append(word)
        total += len(word) + 1
    return " ".join(words).encode()[:size]


def _member(path: str, data: bytes, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mode = mode
    info.mtime = _MTIME
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return header + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


_END = b"\0" * (2 * tarfile.BLOCKSIZE)


def small_archive(name: str, version: str, seed: int = 0) -> bytes:
    """A 5-file skill (SKILL.md, a script, two references, an asset), ~10 KiB unpacked."""
    rng = random.Random(seed)
    files = [
        ("SKILL.md", skill_md(name, version), 0o644),
        ("scripts/run.sh", b'#!/bin/sh\nexec python3 tool.py "$@"\n', 0o755),
        ("references/guide.md", b"# Guide\n\n" + _prose(rng, 3500), 0o644),
        ("references/api.md", b"# API\n\n" + _prose(rng, 3000), 0o644),
        ("assets/template.txt", _prose(rng, 3000), 0o644),
    ]
    tar = b"".join(_member(p, d, m) for p, d, m in files) + _END
    return gzip_bytes(tar)


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """``data`` as a gzip stream (what ``tar czf`` would write)."""
    co = zlib.compressobj(level, zlib.DEFLATED, 31)
    return co.compress(data) + co.flush()


@dataclass
class LargeArchives:
    """Large skill archives sharing the same big incompressible file."""

    payload_bytes: int
    """Size of the big file."""
    _head: bytes
    _state: object  # zlib.Compress after the big member

    @classmethod
    def build(cls, payload_bytes: int, seed: int = 1) -> LargeArchives:
        """Compress the big member once (incompressible: gzip stores it)."""
        payload = random.Random(seed).randbytes(payload_bytes)
        co = zlib.compressobj(1, zlib.DEFLATED, 31)
        head = co.compress(_member("assets/blob.bin", payload))
        return cls(payload_bytes=payload_bytes, _head=head, _state=co)

    def archive(self, version: str, name: str) -> bytes:
        """The complete ``.tar.gz`` of skill ``name`` at ``version``."""
        co = self._state.copy()  # type: ignore[attr-defined]
        tail = _member("SKILL.md", skill_md(name, version)) + _END
        return self._head + co.compress(tail) + co.flush()


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """``data`` cut into upload chunks (copied once, before timing)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


VERSIONS_PER_SKILL = 40
"""Versions installed into one skill before the next skill is used: the service's
default quota (``SKILLSVC_MAX_VERSIONS_PER_SKILL``) is 50."""


def slots(prefix: str, count: int, per_skill: int = VERSIONS_PER_SKILL) -> list[tuple[str, str]]:
    """``count`` (skill id, version) pairs: ``prefix-0`` 1.0.0 … 1.0.39, ``prefix-1`` …"""
    return [(f"{prefix}-{i // per_skill}", f"1.0.{i % per_skill}") for i in range(count)]


def tar_members(data: bytes) -> list[str]:
    """Member names of a ``.tar.gz`` (a self-check of the builders)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        return tf.getnames()
