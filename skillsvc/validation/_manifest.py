"""Parses and checks the skill manifest (SPEC §2).

The manifest is the YAML front matter of ``SKILL.md`` (between a first line ``---`` and
the next ``---`` line) or, when SKILL.md has no front matter, ``manifest.json`` with the
same fields. SKILL.md is required either way. Both are read back from the extracted tree,
never from the archive, so the bytes judged here are the bytes that get installed.

Front matter is read by :mod:`._yaml`: every scalar is the string written, so
``version: 1.0`` is the text ``"1.0"`` (not semver: VERSION_INVALID) and ``name: 2048``
is the name ``"2048"``. manifest.json is typed JSON, so a number there is not a string.

Choices the SPEC leaves open:

* The version resolves as :func:`_version` says; with none anywhere ``Manifest.version``
  is empty and no violation is raised: the service assigns one at install.
* An empty ``expected_name`` / ``expected_version`` means "not given" (proto3 strings).
* JSON ``null`` for an optional field means absent; for a required one it is invalid.
  An empty ``metadata:`` or ``allowed-tools:`` in front matter is absent too.
* ``metadata`` values must be strings (nested maps and lists are BAD_FRONTMATTER), and
  ``compatibility`` over 500 characters or a non-string ``license`` are
  BAD_FRONTMATTER, since the SPEC gives them no code of their own.
* A key given twice, and NUL or another control character (tab and newline aside) in
  any key or value, are BAD_FRONTMATTER in front matter and manifest.json alike.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from typing import Final

from ._entries import printable
from ._model import Code, Manifest, Severity, Violation
from ._rules import is_valid_semver, is_valid_skill_name
from ._yaml import FrontMatterError, control_character, load_front_matter

SKILL_MD: Final = "SKILL.md"
MANIFEST_JSON: Final = "manifest.json"
KNOWN_FIELDS: Final = frozenset(
    {"name", "description", "version", "license", "compatibility", "allowed-tools", "metadata"}
)
MAX_DESCRIPTION_CHARS: Final = 1024
MAX_COMPATIBILITY_CHARS: Final = 500
_BOM: Final = b"\xef\xbb\xbf"


class _BadManifest(Exception):
    pass


def read_manifest(
    read_root_file: Callable[[str, int], bytes | None],
    cap: int,
    *,
    expected_name: str | None,
    expected_version: str | None,
) -> tuple[Manifest | None, list[Violation]]:
    """Find, parse and check the manifest in the extracted skill root."""
    skill_md = read_root_file(SKILL_MD, cap + 1)
    if skill_md is None:
        return None, [Violation(Code.MISSING_SKILL_MD, SKILL_MD, "SKILL.md is missing")]
    source = SKILL_MD
    try:
        front_matter = _front_matter(skill_md[:cap], truncated=len(skill_md) > cap, cap=cap)
        if front_matter is not None:
            try:
                document: object = load_front_matter(front_matter, first_line=2)
            except FrontMatterError as exc:
                raise _BadManifest(_clip(str(exc))) from None
        else:
            data = read_root_file(MANIFEST_JSON, cap + 1)
            if data is None:
                raise _BadManifest(
                    "SKILL.md has no YAML front matter and there is no manifest.json"
                )
            source = MANIFEST_JSON
            if len(data) > cap:
                raise _BadManifest(f"manifest.json is larger than {cap} bytes")
            document = _load_json(data)
    except _BadManifest as exc:
        return None, [Violation(Code.BAD_FRONTMATTER, source, str(exc))]
    return check_manifest(
        document, source, expected_name=expected_name, expected_version=expected_version
    )


def _front_matter(data: bytes, *, truncated: bool, cap: int) -> str | None:
    """The YAML text between the ``---`` lines, or None when there is no front matter."""
    data = data.removeprefix(_BOM)
    lines = data.split(b"\n")
    if lines[0].rstrip(b" \t\r") != b"---":
        return None
    # A line cut by the size cap could look like a closing '---' line; ignore it.
    candidates = lines[1:-1] if truncated else lines[1:]
    for index, line in enumerate(candidates, start=1):
        if line.rstrip(b" \t\r") == b"---":
            body = b"\n".join(lines[1:index])
            break
    else:
        where = f" within its first {cap} bytes" if truncated else ""
        raise _BadManifest(f"SKILL.md front matter is not closed by a '---' line{where}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadManifest("SKILL.md front matter is not valid UTF-8") from None


def _load_json(data: bytes) -> object:
    try:
        document = json.loads(data.decode("utf-8-sig"), object_pairs_hook=_json_object)
    except UnicodeDecodeError:
        raise _BadManifest("manifest.json is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise _BadManifest(f"manifest.json is not valid JSON: {_clip(str(exc))}") from None
    _check_json_text(document)
    return document


def _json_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object, refusing a key given twice (json.loads would keep the last one)."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _BadManifest(f"manifest.json gives the key {_show(key)} twice")
        result[key] = value
    return result


def _check_json_text(document: object) -> None:
    """Refuse control characters in manifest.json strings, as in front matter."""
    pending = [document]
    while pending:
        item = pending.pop()
        texts: list[object] = []
        if isinstance(item, dict):
            texts = list(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        else:
            texts = [item]
        for text in texts:
            bad = control_character(text) if isinstance(text, str) else None
            if bad is not None:
                raise _BadManifest(f"manifest.json holds the control character {bad}")


def _clip(text: str, limit: int = 200) -> str:
    text = printable(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: object) -> str:
    """A short rendering of a manifest value for a message.

    Only scalars are rendered: YAML aliases can make a small document a huge, shared
    structure (the "billion laughs"), whose repr() would never finish.
    """
    if isinstance(value, str):
        return _clip(repr(value[:80]), 90)
    if value is None or isinstance(value, bool | int | float):
        return _clip(repr(value), 90)
    return f"a {type(value).__name__}"


def check_manifest(
    document: object,
    source: str,
    *,
    expected_name: str | None,
    expected_version: str | None,
) -> tuple[Manifest | None, list[Violation]]:
    """Apply the SPEC §2 field rules to a loaded front matter / manifest.json document."""
    violations: list[Violation] = []

    def flag(code: Code, message: str, severity: Severity = Severity.ERROR) -> None:
        violations.append(Violation(code, source, message, severity))

    if not isinstance(document, dict):
        flag(Code.BAD_FRONTMATTER, f"the manifest must be a mapping, not {_kind(document)}")
        return None, violations
    if not all(isinstance(key, str) for key in document):
        flag(Code.BAD_FRONTMATTER, "manifest keys must all be strings")
        return None, violations
    fields: Mapping[str, object] = document
    for key in fields:
        if key not in KNOWN_FIELDS:
            flag(
                Code.UNKNOWN_FIELD,
                f"unknown field {_show(key)} is kept but is not part of the format",
                Severity.WARNING,
            )

    name = _text(fields.get("name"))
    if fields.get("name") is None:
        flag(Code.NAME_INVALID, "name is required")
    elif name is None:
        flag(Code.NAME_INVALID, f"name must be a string, not {_kind(fields['name'])}")
    elif not is_valid_skill_name(name):
        flag(
            Code.NAME_INVALID,
            f"name {_show(name)} must be 1-64 characters of a-z, 0-9 and '-',"
            " without a leading, trailing or doubled '-'",
        )
    elif expected_name and name != expected_name:
        flag(Code.NAME_MISMATCH, f"name {_show(name)} differs from the skill id {expected_name!r}")

    description = _text(fields.get("description"))
    if fields.get("description") is None:
        flag(Code.DESCRIPTION_INVALID, "description is required")
    elif description is None:
        flag(
            Code.DESCRIPTION_INVALID,
            f"description must be a string, not {_kind(fields['description'])}",
        )
    elif not description.strip():
        flag(Code.DESCRIPTION_INVALID, "description is empty")
    elif len(description) > MAX_DESCRIPTION_CHARS:
        flag(
            Code.DESCRIPTION_INVALID,
            f"description is {len(description)} characters (limit {MAX_DESCRIPTION_CHARS})",
        )

    license_ = _optional_text(fields, "license", flag)
    compatibility = _optional_text(fields, "compatibility", flag)
    if len(compatibility) > MAX_COMPATIBILITY_CHARS:
        flag(
            Code.BAD_FRONTMATTER,
            f"compatibility is {len(compatibility)} characters (limit {MAX_COMPATIBILITY_CHARS})",
        )
    allowed_tools = _allowed_tools(fields.get("allowed-tools"), flag)
    metadata = _metadata(fields.get("metadata"), flag)
    version = _version(fields, metadata, flag, expected_version)
    if expected_version and not is_valid_semver(expected_version):
        violations.append(
            Violation(
                Code.VERSION_INVALID,
                "",
                f"requested version {_show(expected_version)} is not a semantic version",
            )
        )

    manifest = Manifest(
        name=name or "",
        description=description or "",
        version=version,
        license=license_,
        compatibility=compatibility,
        allowed_tools=allowed_tools,
        metadata=types.MappingProxyType(metadata),
    )
    return manifest, violations


_Flag = Callable[..., None]


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _optional_text(fields: Mapping[str, object], key: str, flag: _Flag) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        flag(Code.BAD_FRONTMATTER, f"{key} must be a string, not {_kind(value)}")
        return ""
    return value


def _allowed_tools(value: object, flag: _Flag) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(tool, str) for tool in value):
        return tuple(value)
    flag(
        Code.BAD_FRONTMATTER,
        "allowed-tools must be a space-separated string or a list of strings",
    )
    return ()


def _metadata(value: object, flag: _Flag) -> dict[str, str]:
    # An empty value (``metadata:`` with nothing under it) is no metadata.
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        flag(Code.BAD_FRONTMATTER, f"metadata must be a mapping, not {_kind(value)}")
        return {}
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            flag(
                Code.BAD_FRONTMATTER,
                f"metadata must map strings to strings; {_show(key)} maps to {_kind(item)}",
            )
            return {}
        result[key] = item
    return result


def _version(
    fields: Mapping[str, object],
    metadata: Mapping[str, str],
    flag: _Flag,
    expected: str | None,
) -> str:
    """The version the package resolves to (SPEC §2, §4); empty when the service assigns it.

    In order: the request's version; a top-level ``version`` (which must be semver and
    agree with the request's); a semver ``metadata.version``. ``metadata.version`` is
    free-form metadata in the Agent Skills format: one that is not semver is only worth
    a warning, and only when it would otherwise have been the version.
    """
    top = fields.get("version")
    if top is not None:
        if not isinstance(top, str):
            flag(Code.VERSION_INVALID, f"version must be a string, not {_kind(top)}")
        elif not is_valid_semver(top):
            flag(
                Code.VERSION_INVALID,
                f"version {_show(top)} is not a semantic version (MAJOR.MINOR.PATCH, e.g."
                " 1.0.0); leave it out to have the service assign one",
            )
        elif expected and is_valid_semver(expected) and top != expected:
            flag(
                Code.VERSION_MISMATCH,
                f"version {top!r} differs from the requested version {expected!r}",
            )
        elif not expected:
            return top
        return expected or ""
    if expected:
        return expected
    declared = metadata.get("version")
    if declared is None:
        return ""
    if is_valid_semver(declared):
        return declared
    flag(
        Code.VERSION_INVALID,
        f"metadata.version {_show(declared)} is not a semantic version; it is kept as"
        " metadata and the service assigns the version",
        Severity.WARNING,
    )
    return ""
