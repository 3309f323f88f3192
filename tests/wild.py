"""Skill packages shaped like the public ones users upload, and hostile cousins of them.

Modelled on the three largest public skill collections: no ``version`` anywhere (the
Agent Skills format has none), the specification's own ``metadata.version: "1.0"``, a
semver ``metadata.version``, ``license``, ``allowed-tools``, long multi-line
descriptions, scripts with exec bits, nested ``references/`` and ``assets/`` folders,
CRLF line endings and a UTF-8 byte-order mark, zipped and tarred as people do (with and
without a top-level folder).
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field

from tests.packages import FIXED_MTIME, make_archive


@dataclass(frozen=True)
class WildSkill:
    """A public-style skill folder and how it is archived."""

    name: str
    files: dict[str, bytes]
    fmt: str
    """tar.gz, tar or zip."""
    version: str
    """The version a versionless install must end up with on a fresh skill."""
    executable: frozenset[str] = frozenset()
    folder: bool = False
    """Whether the archive holds the files inside a top-level folder named after it."""
    warnings: frozenset[str] = field(default_factory=frozenset)
    """Warning codes Validate reports when no version is requested."""

    def archive(self, extra: dict[str, bytes] | None = None) -> bytes:
        """The archive as a user would make it (``extra`` files added)."""
        files = {**self.files, **(extra or {})}
        prefix = f"{self.name}/" if self.folder else ""
        return make_archive(
            {prefix + path: data for path, data in files.items()},
            self.fmt,
            executable=frozenset(prefix + path for path in self.executable),
        )


_LONG_DESCRIPTION = (
    "Comprehensive PDF manipulation toolkit for extracting text and tables, creating new"
    " PDFs, merging and splitting documents, and handling forms. Use it when a PDF form"
    " must be filled in, or when PDF documents must be processed, generated or analysed"
    " programmatically and at scale."
)

ANTHROPIC_STYLE = WildSkill(
    name="pdf-report",
    fmt="zip",
    folder=True,
    version="1.0.0",
    executable=frozenset({"scripts/check_fields.py", "scripts/fill_form.py"}),
    files={
        "SKILL.md": (
            "---\nname: pdf-report\ndescription: "
            + _LONG_DESCRIPTION
            + "\nlicense: Proprietary. LICENSE.txt has complete terms\n---\n\n"
            "# PDF Processing Guide\n\nRun `scripts/check_fields.py` first; see"
            " [forms](forms.md) and [reference](reference.md).\n"
        ).encode(),
        "LICENSE.txt": b"All rights reserved.\n" * 20,
        "forms.md": b"# Forms\n\n1. Check fields.\n2. Fill them.\n",
        "reference.md": b"# Reference\n\n" + b"- pypdf: merging, splitting\n" * 40,
        "scripts/check_fields.py": b"#!/usr/bin/env python3\nimport sys\nprint(sys.argv)\n",
        "scripts/fill_form.py": b"#!/usr/bin/env python3\nprint('filled')\n",
    },
)

# The Agent Skills specification's own example: metadata.version "1.0" is not semver.
SPEC_EXAMPLE = WildSkill(
    name="pdf-processing",
    fmt="tar.gz",
    version="1.0.0",
    warnings=frozenset({"VERSION_INVALID"}),
    executable=frozenset({"scripts/extract.py"}),
    files={
        "SKILL.md": b"""---
name: pdf-processing
description: Extracts text and tables from PDF files, fills PDF forms, and merges multiple
  PDFs. Use when working with PDF documents or when the user mentions PDFs, forms, or
  document extraction.
license: Apache-2.0
metadata:
  author: example-org
  version: "1.0"
---

# PDF processing

See [the reference](references/REFERENCE.md).
""",
        "scripts/extract.py": b"#!/usr/bin/env python3\nprint('text')\n",
        "references/REFERENCE.md": b"# Reference\n",
        "references/forms/FORMS.md": b"# Forms\n",
        "assets/templates/form.json": b'{"fields": []}\n',
        "assets/logo.png": bytes(range(256)) * 8,
    },
)

# Vercel's skills carry a semver metadata.version, which then is the version.
VERCEL_STYLE = WildSkill(
    name="web-design-guidelines",
    fmt="zip",
    version="1.2.0",
    files={
        "SKILL.md": b"""---
name: web-design-guidelines
description: >-
  Review UI code for Web Interface Guidelines compliance. Use when asked to "review my
  UI", "check accessibility", "audit design", "review UX", or "check my site against
  best practices".
metadata:
  author: vercel
  version: "1.2.0"
  argument-hint: <file-or-pattern>
---

# Web Interface Guidelines
""",
        "rules/accessibility.md": b"# Accessibility\n\n- Every control has a label.\n",
        "rules/forms/inputs.md": b"# Inputs\n",
        "AGENTS.md": b"# Agents\n\nRead SKILL.md.\n",
    },
)

# A skill written on Windows: UTF-8 BOM, CRLF line endings, a block-literal description,
# allowed-tools as a string, and an agents/openai.yaml as OpenAI's skills have.
WINDOWS_STYLE = WildSkill(
    name="gh-fix-ci",
    fmt="tar",
    folder=True,
    version="1.0.0",
    executable=frozenset({"scripts/inspect_pr_checks.sh"}),
    files={
        "SKILL.md": "\ufeff---\r\nname: gh-fix-ci\r\ndescription: |\r\n"
        "  Inspect GitHub PR checks with gh, pull failing GitHub Actions logs,\r\n"
        "  summarize the failure context, then create a fix plan and implement it\r\n"
        "  after the user approves. Use when a user asks to debug or fix failing PR\r\n"
        "  CI checks — including naïve “it's red again” requests.\r\n"
        "allowed-tools: Bash(gh:*) Read Edit\r\n"
        "license: MIT\r\n---\r\n\r\n# Fix CI\r\n\r\nRun the script.\r\n".encode(),
        "scripts/inspect_pr_checks.sh": b"#!/bin/sh\r\ngh pr checks\r\n",
        "agents/openai.yaml": b"interface:\r\n  display_name: Fix CI\r\n",
        "references/gh-cli.md": b"# gh\r\n",
    },
)

WILD: tuple[WildSkill, ...] = (ANTHROPIC_STYLE, SPEC_EXAMPLE, VERCEL_STYLE, WINDOWS_STYLE)


def hostile_front_matter(name: str) -> dict[str, bytes]:
    """SKILL.md variants, keyed by case id, that must be refused with BAD_FRONTMATTER."""
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    return {
        # A last-wins reader installs hostile-b; a first-wins reader shows other-skill.
        "duplicate-key": f"---\nname: other-skill\nname: {name}\ndescription: d\n---\n".encode(),
        # PostgreSQL's jsonb refuses \u0000: this used to fail at COMMITTING.
        "nul": f'---\nname: {name}\ndescription: "a\\0b"\n---\n'.encode(),
        "alias-bomb": (
            "---\n" + "\n".join(laughs) + f"\nname: {name}\ndescription: *a11\n---\n"
        ).encode(),
    }


def amplification_zip(count: int = 600) -> bytes:
    """``count`` deflated members of just under 1 MiB of zeros each (~1 KB apiece).

    No member reaches the per-entry ratio floor; together they expand 1000:1.
    """
    size = (1 << 20) - 1024
    zeros = bytes(size)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = compressor.compress(zeros) + compressor.flush()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("SKILL.md", b"---\nname: bomb\ndescription: d\n---\n")
    # zipfile would recompress every member: write the same deflated body by hand.
    return _zip_with_repeated_member(out.getvalue(), body, zlib.crc32(zeros), size, count)


def _zip_with_repeated_member(base: bytes, body: bytes, crc: int, size: int, count: int) -> bytes:
    import struct

    end = base.rfind(b"PK\x05\x06")
    _, _, _, entries, _, cd_size, cd_offset, _ = struct.unpack("<4sHHHHIIH", base[end : end + 22])
    local = bytearray(base[:cd_offset])
    central = bytearray(base[cd_offset : cd_offset + cd_size])
    for i in range(count):
        name = f"z/{i:04}.bin".encode()
        offset = len(local)
        local += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(body), size, len(name), 0
        )
        local += name + body
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            (3 << 8) | 20,
            20,
            0,
            8,
            0,
            0x21,
            crc,
            len(body),
            size,
            len(name),
            0,
            0,
            0,
            0,
            0o100644 << 16,
            offset,
        )
        central += name
    total = entries + count
    tail = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, total, total, len(central), len(local), 0)
    return bytes(local + central + tail)


def directory_flood_tgz(count: int = 20_100) -> bytes:
    """A tar.gz of ``count`` directory entries (about 95 KB for 20,100)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for i in range(count):
            info = tarfile.TarInfo(f"d{i:05}")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = FIXED_MTIME
            archive.addfile(info)
    return gzip.compress(out.getvalue(), mtime=0)
