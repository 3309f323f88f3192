"""Our verdicts and readings beside the Agent Skills reference validator's (``skills-ref``).

The reference reads front matter with ``strictyaml``: every scalar is the string
written. Ours must read the same values wherever both accept a document, and the
public-style fixtures must be valid for both, apart from the differences the README
lists as deliberate (a UTF-8 byte-order mark and a top-level ``version`` are accepted
here; the reference refuses them).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import strictyaml
from hypothesis import given, settings
from hypothesis import strategies as st
from skills_ref.validator import validate as reference_validate

from skillsvc.validation._yaml import FrontMatterError, load_front_matter
from tests.wild import SPEC_EXAMPLE, WILD, WINDOWS_STYLE, WildSkill

from .builders import zip_of
from .conftest import Validate


def _write(root: Path, skill: WildSkill) -> Path:
    folder = root / skill.name
    for path, data in skill.files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return folder


@pytest.mark.parametrize("skill", WILD, ids=[s.name for s in WILD])
def test_public_style_skills_are_valid_for_both(
    validate: Validate, tmp_path: Path, skill: WildSkill
) -> None:
    out = validate(zip_of(skill.files), expected_name=skill.name)
    assert out.report.valid, out.report.violations
    assert {v.code.value for v in out.report.violations} == skill.warnings
    reference = reference_validate(_write(tmp_path, skill))
    if skill is WINDOWS_STYLE:
        # Deliberate difference: the reference does not skip a UTF-8 byte-order mark.
        assert reference == ["SKILL.md must start with YAML frontmatter (---)"]
        stripped = skill.files["SKILL.md"].removeprefix("\ufeff".encode())
        (tmp_path / skill.name / "SKILL.md").write_bytes(stripped)
        reference = reference_validate(tmp_path / skill.name)
    assert reference == []


def test_spec_example_metadata_version_is_kept_as_written(validate: Validate) -> None:
    out = validate(zip_of(SPEC_EXAMPLE.files))
    assert out.report.manifest is not None
    assert out.report.manifest.metadata["version"] == "1.0"
    assert out.report.manifest.version == ""  # the service assigns one


READ_ALIKE = [
    "name: 2048\ndescription: yes\n",
    "description: no\nlicense: null\ncompatibility: ~\n",
    "version: 1.0\nother: 1.10\nwhen: 2024-01-01\nhex: 0x1F\nneg: -1\n",
    "on: off\nempty:\nquoted: 'it''s'\ndouble: \"a \\u00e9 b\"\n",
    "description: one\n  two\n  three\n",
    "description: >\n  folded\n  text\n\n  para\n",
    "description: |\n  literal\n    indented\n  end\n",
    "description: |-\n  strip\n",
    "# a comment\nname: x # trailing comment\n",
    'metadata:\n  author: me\n  version: "1.0"\n  n: 3\n',
    "allowed-tools:\n  - Bash\n  - Read\n",
    "name: ünïcödé\ndescription: 日本語の説明\n",
    "description: 'single\n\n  quoted'\n",
]


@pytest.mark.parametrize("text", READ_ALIKE)
def test_front_matter_reads_as_the_reference_reads_it(text: str) -> None:
    assert load_front_matter(text, first_line=2) == strictyaml.load(text).data


REFUSED_BY_BOTH = [
    "name: a\nname: b\n",
    "a: &x 1\nb: *x\n",
    "metadata:\n  k: v\n  k: w\n",
    "description: Use when: the user asks\n",
]


@pytest.mark.parametrize("text", REFUSED_BY_BOTH)
def test_front_matter_refused_by_both(text: str) -> None:
    with pytest.raises(FrontMatterError):
        load_front_matter(text, first_line=2)
    with pytest.raises(strictyaml.YAMLError):
        strictyaml.load(text)


# Scalars as authors write them: words YAML 1.1 would type, numbers, dates, unicode.
_WORDS = st.sampled_from(
    ["yes", "no", "on", "off", "true", "null", "~", "1.0", "1.10", "2048", "0o17", "1e3",
     "2024-01-01", "1.2.3", ".inf", "-", "é", "a b", "x: y"]
)  # fmt: skip
_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufeff"),
    min_size=1,
    max_size=40,
)
_KEY = st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True)


def _render(value: str, style: str) -> str:
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    if style == "double":
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@settings(max_examples=120, deadline=timedelta(seconds=2), database=None, derandomize=True)
@given(
    st.dictionaries(
        _KEY,
        st.tuples(st.one_of(_WORDS, _TEXT), st.sampled_from(["plain", "single", "double"])),
        min_size=1,
        max_size=6,
    )
)
def test_generated_front_matter_reads_as_the_reference_reads_it(
    fields: dict[str, tuple[str, str]],
) -> None:
    text = "".join(f"{key}: {_render(value, style)}\n" for key, (value, style) in fields.items())
    try:
        expected = strictyaml.load(text).data
    except strictyaml.YAMLError:
        return  # strictyaml refuses (flow-like plain text); ours may read it
    try:
        ours = load_front_matter(text, first_line=2)
    except FrontMatterError:
        return  # libyaml refuses some plain scalars ruamel accepts; never a misreading
    assert ours == expected, text
