"""Front matter and manifest.json parsing, and the SPEC §2 field rules."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from skillsvc.validation import Code, Limits, Severity

from .builders import minimal_front_matter, skill_md, zip_of
from .conftest import Validate

OK_NAME = "name: pdf-tools\n"
OK_DESC = "description: Does PDF things.\n"


@dataclass(frozen=True)
class Case:
    """A SKILL.md (and maybe manifest.json) with the exact error codes it must produce."""

    id: str
    skill_md: bytes
    errors: frozenset[str]
    extra: dict[str, bytes] = field(default_factory=dict)
    kwargs: dict[str, str] = field(default_factory=dict)
    limits: Limits | None = None


def case(
    id: str,
    content: bytes,
    *errors: str,
    extra: dict[str, bytes] | None = None,
    limits: Limits | None = None,
    **kwargs: str,
) -> Case:
    return Case(id, content, frozenset(errors), extra or {}, kwargs, limits)


def with_fields(**fields: str) -> bytes:
    """Valid name and description plus/overridden by raw YAML ``fields``."""
    return skill_md(minimal_front_matter(**fields))


def without(*keys: str, **fields: str) -> bytes:
    values = {"name": "pdf-tools", "description": "Does PDF things."} | fields
    return skill_md("".join(f"{k}: {v}\n" for k, v in values.items() if k not in keys))


CASES = [
    # --- well-formed variants ---------------------------------------------------------
    case("crlf", b"---\r\nname: pdf-tools\r\ndescription: d\r\n---\r\nbody\r\n"),
    case("bom", b"\xef\xbb\xbf" + with_fields()),
    case("trailing-spaces-on-fences", b"--- \nname: pdf-tools\ndescription: d\n---  \n"),
    case("no-body-no-newline", b"---\nname: pdf-tools\ndescription: d\n---"),
    case("null-optional-fields", with_fields(license="null", compatibility="~")),
    case("allowed-tools-list", with_fields(**{"allowed-tools": "[Bash, Read]"})),
    case("description-1024", with_fields(description="d" * 1024)),
    case("compatibility-500", with_fields(compatibility="c" * 500)),
    case("name-64", with_fields(name="n" * 64), expected_name="n" * 64),
    case("quoted-version", with_fields(version='"1.0.0-rc.1+build.5"')),
    case("unknown-field-is-warning-only", with_fields(homepage="x")),
    # --- BAD_FRONTMATTER --------------------------------------------------------------
    case("no-front-matter", b"# Title\n\nname: pdf-tools\n", "BAD_FRONTMATTER"),
    case("not-at-first-line", b"\n---\n" + OK_NAME.encode() + b"---\n", "BAD_FRONTMATTER"),
    case("unclosed", b"---\nname: pdf-tools\ndescription: d\n", "BAD_FRONTMATTER"),
    case("only-opening", b"---", "BAD_FRONTMATTER"),
    case("not-utf8", b"---\nname: pdf-tools\ndescription: \xff\xfe\n---\n", "BAD_FRONTMATTER"),
    case("yaml-syntax", skill_md("name: [unclosed\n"), "BAD_FRONTMATTER"),
    case("yaml-tab-indent", skill_md("name: x\n\tdescription: y\n"), "BAD_FRONTMATTER"),
    case("yaml-list", skill_md("- a\n- b\n"), "BAD_FRONTMATTER"),
    case("yaml-scalar", skill_md("just text\n"), "BAD_FRONTMATTER"),
    case("yaml-empty", skill_md(""), "BAD_FRONTMATTER"),
    # The front matter ends at the first fence: the description is body text.
    case("second-fence", skill_md(OK_NAME + "---\n" + OK_DESC), "DESCRIPTION_INVALID"),
    case("complex-key", skill_md(OK_NAME + OK_DESC + "? [a, b]\n: x\n"), "BAD_FRONTMATTER"),
    case(
        "python-tag", skill_md("x: !!python/object/apply:os.system ['true']\n"), "BAD_FRONTMATTER"
    ),
    case("explicit-int-tag", with_fields(description="!!int 5"), "BAD_FRONTMATTER"),
    case("explicit-custom-tag", with_fields(description="!thing x"), "BAD_FRONTMATTER"),
    case("second-document", skill_md(OK_NAME + OK_DESC + "...\nx: y\n"), "BAD_FRONTMATTER"),
    # A key given twice: a last-wins reader and a first-wins reader would disagree.
    case("duplicate-name", skill_md(OK_NAME + "name: hostile-b\n" + OK_DESC), "BAD_FRONTMATTER"),
    case(
        "duplicate-metadata-key",
        with_fields(metadata="\n  author: a\n  author: b"),
        "BAD_FRONTMATTER",
    ),
    # Control characters (tab and newline aside), however they are spelled.
    case("nul-escape", with_fields(description='"a\\0b"'), "BAD_FRONTMATTER"),
    case("bell-escape", with_fields(description='"a\\ab"'), "BAD_FRONTMATTER"),
    case("cr-escape", with_fields(description='"a\\rb"'), "BAD_FRONTMATTER"),
    case("nel-escape", with_fields(description='"a\\Nb"'), "BAD_FRONTMATTER"),
    case("esc-in-key", skill_md(OK_NAME + OK_DESC + '"x\\ey": z\n'), "BAD_FRONTMATTER"),
    case("nul-in-metadata", with_fields(metadata='{a: "\\0"}'), "BAD_FRONTMATTER"),
    case("raw-control-char", with_fields(description="a\x07b"), "BAD_FRONTMATTER"),
    case("tab-and-newline-are-fine", with_fields(description='"a\\tb\\nc"')),
    case("alias", skill_md("x: &x pdf-tools\nname: *x\n" + OK_DESC), "BAD_FRONTMATTER"),
    case(
        "manifest-json-duplicate-key",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b'{"name": "pdf-tools", "name": "x", "description": "d"}'},
    ),
    case(
        "manifest-json-nul",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b'{"name": "pdf-tools", "description": "a\\u0000b"}'},
    ),
    case(
        "manifest-json-lone-surrogate",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b'{"name": "pdf-tools", "description": "\\ud800"}'},
    ),
    case("deep-nesting", with_fields(x="[" * 40 + "]" * 40), "BAD_FRONTMATTER"),
    case("deep-nesting-unclosed", with_fields(x="[" * 100_000), "BAD_FRONTMATTER"),
    case(
        "deep-block-nesting",
        skill_md(
            OK_NAME + OK_DESC + "".join(" " * i + f"k{i}:\n" for i in range(40)) + " " * 40 + "v\n"
        ),
        "BAD_FRONTMATTER",
    ),
    case("metadata-block-nested", with_fields(metadata="\n  a:\n    b: c"), "BAD_FRONTMATTER"),
    case("metadata-list", with_fields(metadata="[a, b]"), "BAD_FRONTMATTER"),
    case("metadata-nested", with_fields(metadata="{a: {b: c}}"), "BAD_FRONTMATTER"),
    case("allowed-tools-nested", with_fields(**{"allowed-tools": "[[a]]"}), "BAD_FRONTMATTER"),
    case("allowed-tools-map", with_fields(**{"allowed-tools": "{a: b}"}), "BAD_FRONTMATTER"),
    case("compatibility-501", with_fields(compatibility="c" * 501), "BAD_FRONTMATTER"),
    case("license-list", with_fields(license="[MIT]"), "BAD_FRONTMATTER"),
    case(
        "front-matter-over-cap",
        with_fields(description="d" * 900, extra="e" * 900),
        "BAD_FRONTMATTER",
        limits=Limits(max_manifest_bytes=1024),
    ),
    case(
        "manifest-json-invalid",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b"{name: pdf-tools}"},
    ),
    case(
        "manifest-json-list",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b"[1, 2]"},
    ),
    case(
        "manifest-json-deep",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b"[" * 200_000},
    ),
    case(
        "manifest-json-not-utf8",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b'{"name": "\xff"}'},
    ),
    case(
        "manifest-json-too-big",
        b"# body only\n",
        "BAD_FRONTMATTER",
        extra={"manifest.json": b'{"name": "pdf-tools", "description": "' + b"d" * 2000 + b'"}'},
        limits=Limits(max_manifest_bytes=1024),
    ),
    case(
        "manifest-json-bad-fields",
        b"# body only\n",
        "NAME_INVALID",
        "VERSION_INVALID",
        extra={"manifest.json": b'{"name": "PDF", "description": "d", "version": 1.0}'},
    ),
    # --- name -------------------------------------------------------------------------
    case("name-missing", without("name"), "NAME_INVALID"),
    case("name-null-is-text", with_fields(name="null"), "NAME_MISMATCH", expected_name="pdf"),
    case("name-empty", with_fields(name='""'), "NAME_INVALID"),
    case("name-leading-dash", with_fields(name="-pdf"), "NAME_INVALID"),
    case("name-trailing-dash", with_fields(name="pdf-"), "NAME_INVALID"),
    case("name-double-dash", with_fields(name="pdf--tools"), "NAME_INVALID"),
    case("name-upper", with_fields(name="PDF-tools"), "NAME_INVALID"),
    case("name-underscore", with_fields(name="pdf_tools"), "NAME_INVALID"),
    case("name-65", with_fields(name="n" * 65), "NAME_INVALID"),
    case("name-digits", with_fields(name="123"), expected_name="123"),
    case("name-bool-like", with_fields(name="yes"), "NAME_MISMATCH", expected_name="pdf"),
    case("name-mismatch", with_fields(), "NAME_MISMATCH", expected_name="other-skill"),
    # --- description ------------------------------------------------------------------
    case("description-missing", without("description"), "DESCRIPTION_INVALID"),
    case("description-empty", with_fields(description='""'), "DESCRIPTION_INVALID"),
    case("description-blank", with_fields(description='"   "'), "DESCRIPTION_INVALID"),
    case("description-1025", with_fields(description="d" * 1025), "DESCRIPTION_INVALID"),
    case("description-list", with_fields(description="[a]"), "DESCRIPTION_INVALID"),
    # --- version ----------------------------------------------------------------------
    case("version-float", with_fields(version="1.0"), "VERSION_INVALID"),
    case("version-int", with_fields(version="1"), "VERSION_INVALID"),
    case("version-v-prefix", with_fields(version="v1.2.3"), "VERSION_INVALID"),
    case("version-leading-zero", with_fields(version="01.2.3"), "VERSION_INVALID"),
    case("version-two-parts", with_fields(version='"1.2"'), "VERSION_INVALID"),
    case("version-empty", with_fields(version='""'), "VERSION_INVALID"),
    case(
        "version-1.0-with-request",
        with_fields(version="1.0"),
        "VERSION_INVALID",
        expected_version="1.0.0",
    ),
    # metadata.version is free-form metadata: never an error.
    case("version-beats-metadata", with_fields(version="1.2.3", metadata='{version: "1.2.4"}')),
    case("metadata-version-not-semver", with_fields(metadata="{version: latest}")),
    case("metadata-version-1.0", with_fields(metadata='{version: "1.0"}')),
    case(
        "metadata-version-1.0-request",
        with_fields(metadata="{version: 1.0}"),
        expected_version="1.0.0",
    ),
    case("expected-version-invalid", with_fields(), "VERSION_INVALID", expected_version="banana"),
    case(
        "version-mismatch",
        with_fields(version="1.2.3"),
        "VERSION_MISMATCH",
        expected_version="1.2.4",
    ),
    # The request's version wins over metadata.version.
    case(
        "metadata-version-differs",
        with_fields(metadata='{version: "1.2.3"}'),
        expected_version="2.0.0",
    ),
    case(
        "build-metadata-is-not-ignored",
        with_fields(version="1.2.3+a"),
        "VERSION_MISMATCH",
        expected_version="1.2.3+b",
    ),
]


@pytest.mark.parametrize("manifest_case", CASES, ids=[c.id for c in CASES])
def test_manifest_rules(validate: Validate, manifest_case: Case) -> None:
    files = {"SKILL.md": manifest_case.skill_md, **manifest_case.extra}
    started = time.perf_counter()
    out = validate(zip_of(files), manifest_case.limits, **manifest_case.kwargs)
    assert time.perf_counter() - started < 1
    assert out.errors == manifest_case.errors, out.report.violations
    for violation in out.report.violations:
        assert violation.path in {"SKILL.md", "manifest.json", ""}


@pytest.mark.parametrize(
    "files",
    [
        {"README.md": b"# no skill\n"},
        {"manifest.json": b'{"name": "pdf-tools", "description": "d"}'},
        {"skill.md": with_fields()},
        {"SKILL.md/inner.txt": b"a directory, not a file"},
        {"docs/SKILL.md": with_fields(), "other/x": b"x"},
    ],
    ids=["nothing", "manifest-json-only", "lowercase", "directory", "not-at-root"],
)
def test_missing_skill_md(validate: Validate, files: dict[str, bytes]) -> None:
    out = validate(zip_of(files))
    assert out.errors == {"MISSING_SKILL_MD"}
    assert out.report.manifest is None


def test_unquoted_version_is_the_text_written(validate: Validate) -> None:
    out = validate(zip_of({"SKILL.md": with_fields(version="1.10")}))
    (violation,) = out.report.violations
    assert violation.code is Code.VERSION_INVALID
    assert "'1.10'" in violation.message and "semantic version" in violation.message


def test_manifest_kept_with_field_errors(validate: Validate) -> None:
    out = validate(
        zip_of({"SKILL.md": with_fields(name="Bad_Name", license="MIT", homepage="x")}),
        expected_version="1.0.0",
    )
    assert out.errors == {"NAME_INVALID"}
    assert [v.severity for v in out.report.violations] == [Severity.WARNING, Severity.ERROR]
    manifest = out.report.manifest
    assert manifest is not None
    assert (manifest.name, manifest.license, manifest.version) == ("Bad_Name", "MIT", "1.0.0")


def test_metadata_is_read_only(validate: Validate) -> None:
    out = validate(zip_of({"SKILL.md": with_fields(metadata="{a: b}")}))
    assert out.report.manifest is not None
    with pytest.raises(TypeError):
        out.report.manifest.metadata["a"] = "c"  # type: ignore[index]


def test_billion_laughs_is_not_expanded(validate: Validate) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    front = "\n".join(lines) + "\n"
    for key in ("version", "name", "description", "license", "metadata", "allowed-tools"):
        # Anchors first: YAML aliases can only refer backwards.
        content = skill_md(front + minimal_front_matter(**{key: "*a11"}))
        started = time.perf_counter()
        out = validate(zip_of({"SKILL.md": content}))
        assert time.perf_counter() - started < 1, key
        assert not out.report.valid, key


def test_every_scalar_is_the_text_written(validate: Validate) -> None:
    front = (
        "name: 2048\ndescription: yes\nlicense: null\ncompatibility: 0x1F\n"
        "allowed-tools: [on, off, 1.0]\nmetadata:\n  version: 1.0\n  when: 2024-13-45\n"
        "  big: " + "9" * 400 + "\n"
    )
    out = validate(zip_of({"SKILL.md": skill_md(front)}), expected_name="2048")
    assert out.report.valid, out.report.violations
    manifest = out.report.manifest
    assert manifest is not None
    assert (manifest.name, manifest.description, manifest.license) == ("2048", "yes", "null")
    assert manifest.compatibility == "0x1F"
    assert manifest.allowed_tools == ("on", "off", "1.0")
    assert dict(manifest.metadata) == {"version": "1.0", "when": "2024-13-45", "big": "9" * 400}


def test_duplicate_key_message_names_key_and_lines(validate: Validate) -> None:
    content = skill_md("name: other-skill\ndescription: d\nname: hostile-b\n")
    out = validate(zip_of({"SKILL.md": content}))
    (violation,) = out.report.violations
    assert violation.code is Code.BAD_FRONTMATTER
    # SKILL.md line 1 is the opening '---'.
    assert "'name'" in violation.message and "lines 2 and 4" in violation.message


def test_control_character_message_names_it(validate: Validate) -> None:
    out = validate(zip_of({"SKILL.md": with_fields(description='"a\\0b"')}))
    (violation,) = out.report.violations
    assert violation.code is Code.BAD_FRONTMATTER
    assert "U+0000" in violation.message and "'description'" in violation.message


@pytest.mark.parametrize(
    ("front", "expected", "version", "warned"),
    [
        # The Agent Skills specification's own example.
        ('metadata:\n  author: example-org\n  version: "1.0"\n', None, "", True),
        ('metadata:\n  author: example-org\n  version: "1.0"\n', "1.0.0", "1.0.0", False),
        ('metadata:\n  version: "2.1.0"\n', None, "2.1.0", False),
        ('metadata:\n  version: "2.1.0"\n', "3.0.0", "3.0.0", False),
        ('version: "1.2.3"\nmetadata:\n  version: "9.9.9"\n', None, "1.2.3", False),
        ('version: "1.2.3"\nmetadata:\n  version: "latest"\n', None, "1.2.3", False),
        ("", None, "", False),
        ("", "4.5.6", "4.5.6", False),
    ],
)
def test_version_resolution(
    validate: Validate, front: str, expected: str | None, version: str, warned: bool
) -> None:
    content = skill_md(minimal_front_matter() + front)
    kwargs = {"expected_version": expected} if expected else {}
    out = validate(zip_of({"SKILL.md": content}), **kwargs)
    assert out.report.valid, out.report.violations
    assert out.report.manifest is not None
    assert out.report.manifest.version == version
    warnings = [(v.code, v.severity) for v in out.report.violations]
    assert warnings == ([(Code.VERSION_INVALID, Severity.WARNING)] if warned else [])
    assert "version" in out.report.manifest.metadata or "metadata" not in front
