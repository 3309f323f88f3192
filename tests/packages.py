"""Skill archives built in memory for tests."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

FIXED_MTIME = 1_767_225_600  # 2026-01-01


def skill_md(name: str, version: str | None = "1.0.0", description: str = "A test skill") -> str:
    lines = ["---", f"name: {name}", f"description: {description}"]
    if version is not None:
        lines.append(f'version: "{version}"')
    return "\n".join([*lines, "---", "", f"# {name}", "", "Use it well.", ""])


def make_archive(
    files: dict[str, bytes | str],
    fmt: str = "tar.gz",
    *,
    executable: frozenset[str] = frozenset(),
) -> bytes:
    """An archive holding ``files`` (path → content) in ``fmt``: tar.gz, tar or zip."""
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, content in files.items():
                info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
                info.create_system = 3
                info.external_attr = (0o100755 if path in executable else 0o100644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, content)
        return buf.getvalue()
    # Fixed times everywhere, so the same files always give the same bytes (digests).
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if path in executable else 0o644
            info.mtime = FIXED_MTIME
            tf.addfile(info, io.BytesIO(data))
    if fmt == "tar.gz":
        return gzip.compress(buf.getvalue(), mtime=0)
    return buf.getvalue()


def skill_archive(
    name: str,
    version: str | None = "1.0.0",
    fmt: str = "tar.gz",
    *,
    extra: dict[str, bytes | str] | None = None,
    description: str = "A test skill",
) -> bytes:
    """A valid skill package with SKILL.md, a script and a reference."""
    files: dict[str, bytes | str] = {
        "SKILL.md": skill_md(name, version, description),
        "scripts/run.sh": "#!/bin/sh\necho hello\n",
        "references/guide.md": "# Guide\n",
    }
    files.update(extra or {})
    return make_archive(files, fmt, executable=frozenset({"scripts/run.sh"}))
