"""One verdict: whatever Validate calls valid installs, and what it refuses fails alike.

A property test through the production server: hypothesis writes SKILL.md front
matter (unicode, control characters however spelled, long values, duplicate keys,
odd YAML), then the same archive goes to Validate and to a versionless Install of a
fresh skill. Validate's verdict and Install's outcome must agree: valid ⇔ SUCCEEDED
with the validated manifest stored, invalid ⇔ FAILED with the same error codes; never
INTERNAL.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2
from tests.install.conftest import Stub, create_skill, install_and_wait
from tests.install.test_wild import error_codes, failure_report, validate
from tests.packages import make_archive

# Any character UTF-8 can carry (control characters included), short or long.
_CHARS = st.characters(blacklist_categories=("Cs",))
_VALUE = st.one_of(
    st.text(_CHARS, max_size=30),
    st.sampled_from(["yes", "1.0", "1.2.3", "2048", "null", "~", "a: b", "[x]", "{k: v}", "*a"]),
    st.text(st.sampled_from("ab \u00e9\u65e5"), min_size=1000, max_size=1100),
)


def _double_quoted(value: str) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02x}")  # how a control character gets into a value
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _render(value: str, style: str) -> str:
    if style == "double":
        return _double_quoted(value)
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    if style == "literal":
        return "|\n" + "".join(f"  {line}\n" for line in value.split("\n")).rstrip("\n")
    return value  # plain: whatever YAML makes of it


_STYLE = st.sampled_from(["plain", "double", "single", "literal"])


@st.composite
def front_matters(draw: st.DrawFn, skill_id: str) -> str:
    """A SKILL.md front matter block, mostly well-formed, sometimes not at all."""
    lines: list[str] = []
    name = skill_id if draw(st.integers(0, 4)) else draw(_VALUE)
    lines.append(f"name: {_render(name, draw(_STYLE))}")
    if draw(st.integers(0, 6)):
        lines.append(f"description: {_render(draw(_VALUE), draw(_STYLE))}")
    optional = ["license", "compatibility", "allowed-tools", "version", "homepage"]
    for key in draw(st.lists(st.sampled_from(optional), max_size=3, unique=True)):
        lines.append(f"{key}: {_render(draw(_VALUE), draw(_STYLE))}")
    if draw(st.booleans()):
        entries = draw(st.dictionaries(st.sampled_from(["version", "author", "x"]), _VALUE))
        lines.append("metadata:" if entries else "metadata: {}")
        lines += [f"  {k}: {_render(v, draw(st.sampled_from(['double', 'single'])))}"
                  for k, v in entries.items()]  # fmt: skip
    if draw(st.integers(0, 5)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(lines)))  # twice
    if draw(st.integers(0, 5)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(_CHARS, max_size=20)))
    return "\n".join(lines) + "\n"


_SKILL_IDS = itertools.count()


@settings(
    max_examples=50,
    deadline=timedelta(seconds=30),
    database=None,
    derandomize=True,
    # One server for every example (each example creates its own skill).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_validate_and_install_agree(app: App, stub: Stub, data: st.DataObject) -> None:
    skill_id = f"prop-{next(_SKILL_IDS)}"
    front = data.draw(front_matters(skill_id), label="front matter")
    archive = make_archive({"SKILL.md": f"---\n{front}---\n# Body\n".encode()}, "zip")
    await create_skill(stub, skill_id)
    report = await validate(stub, archive, skill_id=skill_id)
    final, _ = await install_and_wait(stub, skill_id, archive)
    assert final.error.code != grpc.StatusCode.INTERNAL.value[0], final.error
    if report.valid:
        assert final.state == resources_pb2.OPERATION_STATE_SUCCEEDED, final.error
        package = await stub.GetPackage(
            skill_service_pb2.GetPackageRequest(skill_id=skill_id, version=final.version)
        )
        expected = resources_pb2.Manifest()
        expected.CopyFrom(report.manifest)
        expected.version = report.manifest.version or final.version
        assert package.manifest == expected
    else:
        assert final.state == resources_pb2.OPERATION_STATE_FAILED
        assert error_codes(failure_report(final)) == error_codes(report)
