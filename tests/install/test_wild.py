"""Public-style skills install unedited, with no version in the request (issue 11).

Each goes through the production server: Validate, then Install without a version,
then the same Install again (a no-op on the same version), and alongside concurrent
versionless installs of other content. Hostile cousins fail with their codes, the
same in Validate and in Install, leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.install.conftest import Stub, create_skill, events, install, install_and_wait
from tests.wild import (
    ANTHROPIC_STYLE,
    WILD,
    WildSkill,
    amplification_zip,
    directory_flood_tgz,
    hostile_front_matter,
)

OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED


async def validate(stub: Stub, data: bytes, **fields: object) -> resources_pb2.ValidationReport:
    """The Validate RPC on ``data``."""

    async def messages() -> AsyncIterator[skill_service_pb2.ValidateRequest]:
        yield skill_service_pb2.ValidateRequest(
            spec=skill_service_pb2.ValidateSpec(
                upload=skill_service_pb2.UploadSource(size_bytes=len(data)),
                **fields,  # type: ignore[arg-type]
            )
        )
        for start in range(0, len(data), 64 * 1024):
            yield skill_service_pb2.ValidateRequest(chunk=data[start : start + 64 * 1024])

    return await stub.Validate(messages())


def failure_report(op: resources_pb2.Operation) -> resources_pb2.ValidationReport:
    """The ValidationReport in a failed operation's error details."""
    for packed in op.error.details:
        if packed.Is(resources_pb2.ValidationReport.DESCRIPTOR):
            report = resources_pb2.ValidationReport()
            packed.Unpack(report)
            return report
    raise AssertionError(f"no ValidationReport in {op.error}")


def error_codes(report: resources_pb2.ValidationReport) -> set[str]:
    return {v.code for v in report.violations if v.severity == resources_pb2.SEVERITY_ERROR}


def installed_tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file under ``root``: (content, executable)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), bool(p.stat().st_mode & 0o111))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("skill", WILD, ids=[s.name for s in WILD])
async def test_public_style_skill_installs_without_a_version_twice(
    app: App, stub: Stub, skill: WildSkill
) -> None:
    await create_skill(stub, skill.name)
    data = skill.archive()
    report = await validate(stub, data, skill_id=skill.name)
    assert report.valid, report
    assert {v.code for v in report.violations} == set(skill.warnings)

    accepted = await install(stub, skill.name, data)
    assert accepted.version == ""  # not known yet: the package has not been read
    seen = await events(stub, accepted.operation_id)
    final = await stub.GetOperation(
        skill_service_pb2.GetOperationRequest(operation_id=accepted.operation_id)
    )
    assert final.state == OK, final.error
    assert final.version == skill.version
    # Once known, the version is on every later event.
    versions = [e.version for e in seen]
    known = versions.index(skill.version)
    assert set(versions[:known]) <= {""} and set(versions[known:]) == {skill.version}

    package = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id=skill.name))
    assert (package.version, package.current) == (skill.version, True)
    assert package.manifest.version == skill.version
    expected = {path: (content, path in skill.executable) for path, content in skill.files.items()}
    version_dir = Path(package.path)
    assert installed_tree(version_dir) == expected  # byte for byte, exec bits kept

    again, _ = await install_and_wait(stub, skill.name, data)
    assert again.state == OK, again.error
    assert again.version == skill.version
    listed = await stub.ListPackages(skill_service_pb2.ListPackagesRequest(skill_id=skill.name))
    assert [p.version for p in listed.packages] == [skill.version]
    assert not any((app.store.root / "staging").glob("*/*"))


async def test_spec_example_keeps_metadata_and_takes_a_requested_version(stub: Stub) -> None:
    from tests.wild import SPEC_EXAMPLE

    await create_skill(stub, SPEC_EXAMPLE.name)
    data = SPEC_EXAMPLE.archive()
    report = await validate(stub, data, skill_id=SPEC_EXAMPLE.name, version="1.0.0")
    assert report.valid and list(report.violations) == []  # no warning: 1.0.0 is asked for
    final, _ = await install_and_wait(stub, SPEC_EXAMPLE.name, data, version="1.0.0")
    assert (final.state, final.version) == (OK, "1.0.0")
    package = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id=SPEC_EXAMPLE.name))
    assert package.manifest.metadata["version"] == "1.0"
    assert dict(package.manifest.metadata) == {"author": "example-org", "version": "1.0"}
    assert package.manifest.license == "Apache-2.0"


async def test_concurrent_versionless_installs_get_distinct_versions(
    make_app, db: asyncpg.Connection
) -> None:  # type: ignore[no-untyped-def]
    app: App = await make_app(max_versions_per_skill=100)
    skill = ANTHROPIC_STYLE
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, skill.name)
        original = skill.archive()
        first, _ = await install_and_wait(stub, skill.name, original)
        assert first.version == "1.0.0"
        # 24 new contents and the original again, all at once, none with a version.
        others = [skill.archive({f"notes/{i}.md": f"note {i}\n".encode()}) for i in range(24)]
        ops = await asyncio.gather(*(install(stub, skill.name, d) for d in [*others, original]))
        await asyncio.gather(*(events(stub, op.operation_id) for op in ops))
        finals = [
            await stub.GetOperation(
                skill_service_pb2.GetOperationRequest(operation_id=o.operation_id)
            )
            for o in ops
        ]
        assert all(f.state == OK for f in finals), [f.error for f in finals if f.state != OK]
        assert finals[-1].version == "1.0.0"  # identical bytes: the installed version
        assigned = [f.version for f in finals[:-1]]
        assert sorted(assigned, key=lambda v: int(v.split(".")[2])) == [
            f"1.0.{i}" for i in range(1, 25)
        ]
        # Each assigned version holds the content it was assigned for.
        for op, data in zip(finals[:-1], others, strict=True):
            row = await db.fetchrow(
                "SELECT sha256, state FROM skill_packages WHERE skill_id = $1 AND version = $2",
                skill.name,
                op.version,
            )
            assert (row["sha256"], row["state"]) == (hashlib.sha256(data).hexdigest(), "READY")

        # The next one follows the highest; a deleted version is never handed out again.
        latest, _ = await install_and_wait(
            stub, skill.name, skill.archive({"x.md": b"x"}), activate=False
        )
        assert latest.version == "1.0.25"
        await stub.DeletePackage(
            skill_service_pb2.DeletePackageRequest(skill_id=skill.name, version="1.0.25")
        )
        after, _ = await install_and_wait(stub, skill.name, skill.archive({"y.md": b"y"}))
        assert after.version == "1.0.26"


async def test_assigned_version_follows_a_prerelease_and_a_declared_version(stub: Stub) -> None:
    skill = ANTHROPIC_STYLE
    await create_skill(stub, skill.name)
    final, _ = await install_and_wait(stub, skill.name, skill.archive(), version="2.0.0-rc.1")
    assert final.version == "2.0.0-rc.1"
    final, _ = await install_and_wait(stub, skill.name, skill.archive({"a": b"a"}))
    assert final.version == "2.0.0"
    final, _ = await install_and_wait(stub, skill.name, skill.archive({"b": b"b"}))
    assert final.version == "2.0.1"


@pytest.mark.parametrize("case", ["duplicate-key", "nul", "alias-bomb"])
async def test_hostile_front_matter_fails_alike_in_validate_and_install(
    app: App, stub: Stub, db: asyncpg.Connection, case: str
) -> None:
    from tests.packages import make_archive

    await create_skill(stub, "hostile-b")
    data = make_archive({"SKILL.md": hostile_front_matter("hostile-b")[case]}, "zip")
    report = await validate(stub, data, skill_id="hostile-b")
    assert not report.valid
    assert error_codes(report) == {"BAD_FRONTMATTER"}, report
    final, _ = await install_and_wait(stub, "hostile-b", data)
    assert final.state == FAILED
    assert final.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], final.error
    assert error_codes(failure_report(final)) == {"BAD_FRONTMATTER"}
    assert [v.message for v in failure_report(final).violations] == [
        v.message for v in report.violations
    ]
    if case == "duplicate-key":
        assert "'name'" in report.violations[0].message
        assert "lines 2 and 3" in report.violations[0].message
    assert await db.fetchval("SELECT count(*) FROM skill_packages") == 0
    assert not any(p.is_file() for p in (app.store.root / "blobs").rglob("*"))
    assert not any((app.store.root / "staging").glob("*/*"))


@pytest.mark.parametrize(
    ("skill_id", "build", "code"),
    [
        ("bomb", amplification_zip, "COMPRESSION_RATIO"),
        ("flood", directory_flood_tgz, "TOO_MANY_FILES"),
    ],
    ids=["600-small-bombs-zip", "20100-directories-tgz"],
)
async def test_amplification_archives_are_refused(
    app: App, stub: Stub, skill_id: str, build: object, code: str
) -> None:
    assert callable(build)
    data: bytes = build()
    assert len(data) < 1 << 20
    await create_skill(stub, skill_id)
    report = await validate(stub, data, skill_id=skill_id)
    assert error_codes(report) == {code}
    assert report.unpacked_bytes < 2 << 20  # writing stopped at once
    final, _ = await install_and_wait(stub, skill_id, data)
    assert final.state == FAILED
    assert error_codes(failure_report(final)) == {code}
    assert not any((app.store.root / "staging").glob("*/*"))
    assert not any(p.is_file() for p in (app.store.root / "packages").rglob("*"))


async def test_assignment_respects_the_version_quota(make_app, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    app: App = await make_app(max_versions_per_skill=1)
    skill = ANTHROPIC_STYLE
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, skill.name)
        first, _ = await install_and_wait(stub, skill.name, skill.archive())
        assert first.version == "1.0.0"
        # New content needs a new version: past the quota, the install fails and
        # leaves no claim behind.
        refused, _ = await install_and_wait(stub, skill.name, skill.archive({"n.md": b"n"}))
        assert refused.state == FAILED
        assert refused.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], refused.error
        rows = await db.fetch("SELECT version, state FROM skill_packages ORDER BY version")
        assert [tuple(r) for r in rows] == [("1.0.0", "READY")]
        # The same bytes again are not a new version.
        again, _ = await install_and_wait(stub, skill.name, skill.archive())
        assert (again.state, again.version) == (OK, "1.0.0")
