"""Install end to end: stages, files, rows, idempotency, immutability, failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from pathlib import Path

import asyncpg
import grpc
from google.rpc import error_details_pb2

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2
from tests.helpers import expect_status, reason
from tests.install.conftest import Stub, events, install, install_and_wait
from tests.packages import make_archive, skill_archive, skill_md

OK = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED
S = resources_pb2.InstallStage


def stage_names(seen: list[resources_pb2.InstallEvent]) -> list[str]:
    names: list[str] = []
    for event in seen:
        name = S.Name(event.stage).removeprefix("INSTALL_STAGE_")
        if not names or names[-1] != name:
            names.append(name)
    return names


async def test_upload_install_end_to_end(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    # Every change is announced with NOTIFY; listen to all of them to check the stages.
    notified: list[str] = []
    await db.add_listener(
        "skillsvc_progress", lambda *args: notified.append(json.loads(args[3])["stage"])
    )
    data = skill_archive(skill, "1.2.0")
    digest = hashlib.sha256(data).hexdigest()
    accepted = await install(stub, skill, data)
    assert accepted.type == resources_pb2.OPERATION_TYPE_INSTALL
    assert accepted.bytes_done == len(data) == accepted.bytes_total
    assert accepted.state == resources_pb2.OPERATION_STATE_PENDING
    seen = await events(stub, accepted.operation_id)
    # The server's listener may hear DONE (and end the stream) before this connection
    # does: wait for it here too.
    async with asyncio.timeout(30):
        while "DONE" not in notified:
            await db.execute("SELECT 1")  # deliver notifications still in flight
            await asyncio.sleep(0.01)
    assert [n for i, n in enumerate(notified) if i == 0 or notified[i - 1] != n] == [
        "QUEUED",
        "EXTRACTING",
        "COMMITTING",
        "DONE",
    ]
    assert seen[-1].state == OK
    assert all(e.operation_id == accepted.operation_id for e in seen)

    # Files on disk, read-only, exec bit kept, the current link, the blob.
    root = app.store.root
    version_dir = root / "packages" / skill / "1.2.0"
    assert (version_dir / "SKILL.md").read_text().startswith("---\nname: pdf-tools")
    assert os.stat(version_dir / "scripts" / "run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(version_dir / "SKILL.md").st_mode & stat.S_IWUSR
    assert os.readlink(root / "packages" / skill / "current") == "1.2.0"
    assert (root / "packages" / skill / "current" / "SKILL.md").exists()
    assert (root / "blobs" / "sha256" / digest).read_bytes() == data
    assert not any((root / "staging").glob("*/*")), "staging left behind"

    # Rows.
    package = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id=skill))
    assert package.version == "1.2.0"
    assert package.state == resources_pb2.PACKAGE_STATE_READY
    assert package.current
    assert package.sha256 == digest
    assert package.size_bytes == len(data)
    assert package.file_count == 3
    assert package.manifest.name == skill
    assert package.path == str(version_dir)
    definition = await stub.GetSkillDefinition(
        skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill)
    )
    assert definition.current_version == "1.2.0"
    files = await db.fetchval("SELECT files FROM skill_packages WHERE skill_id = $1", skill)
    assert '"scripts/run.sh"' in files


async def test_storage_metric_counts_installs_and_deletions(stub: Stub, skill: str) -> None:
    from prometheus_client import REGISTRY

    def stored() -> float:
        return REGISTRY.get_sample_value("skill_storage_bytes") or 0.0

    before = stored()
    data = skill_archive(skill, "1.0.0")
    await install_and_wait(stub, skill, data, activate=False)
    package = await stub.GetPackage(
        skill_service_pb2.GetPackageRequest(skill_id=skill, version="1.0.0")
    )
    assert stored() - before == package.size_bytes + package.unpacked_bytes
    await stub.DeletePackage(
        skill_service_pb2.DeletePackageRequest(skill_id=skill, version="1.0.0")
    )
    assert stored() == before


async def test_download_is_byte_identical(stub: Stub, skill: str) -> None:
    data = skill_archive(skill, "1.0.0", extra={"assets/blob.bin": os.urandom(3 * 1024 * 1024)})
    final, _ = await install_and_wait(stub, skill, data)
    assert final.state == OK
    call = stub.DownloadPackage(
        skill_service_pb2.DownloadPackageRequest(skill_id=skill, version="1.0.0")
    )
    messages = [m async for m in call]
    assert messages[0].info.sha256 == hashlib.sha256(data).hexdigest()
    assert messages[0].info.size_bytes == len(data)
    assert b"".join(m.chunk for m in messages[1:]) == data


async def test_version_from_the_request_and_zip_format(stub: Stub, skill: str) -> None:
    data = make_archive({"pdf-tools/SKILL.md": skill_md(skill, None)}, "zip")
    final, _ = await install_and_wait(stub, skill, data, version="2.0.0-rc.1")
    assert final.state == OK, final.error
    assert final.version == "2.0.0-rc.1"


async def test_identical_reinstall_succeeds_without_touching_files(
    app: App, stub: Stub, skill: str
) -> None:
    data = skill_archive(skill, "1.0.0")
    first, _ = await install_and_wait(stub, skill, data)
    version_dir = app.store.root / "packages" / skill / "1.0.0"
    inode = os.stat(version_dir).st_ino
    again, _ = await install_and_wait(stub, skill, data)
    assert again.state == OK
    assert again.operation_id != first.operation_id
    assert os.stat(version_dir).st_ino == inode
    assert not any((app.store.root / "staging").glob("*/*"))


async def test_different_bytes_for_an_installed_version_is_already_exists(
    stub: Stub, skill: str
) -> None:
    await install_and_wait(stub, skill, skill_archive(skill, "1.0.0"))
    other = skill_archive(skill, "1.0.0", description="changed")
    final, seen = await install_and_wait(stub, skill, other)
    assert final.state == FAILED
    assert final.error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert seen[-1].stage == S.Value("INSTALL_STAGE_FAILED")
    assert seen[-1].error.code == final.error.code
    # The installed version is untouched.
    package = await stub.GetPackage(
        skill_service_pb2.GetPackageRequest(skill_id=skill, version="1.0.0")
    )
    assert package.state == resources_pb2.PACKAGE_STATE_READY


async def test_activate_false_keeps_the_current_version(app: App, stub: Stub, skill: str) -> None:
    await install_and_wait(stub, skill, skill_archive(skill, "1.0.0"))
    final, seen = await install_and_wait(stub, skill, skill_archive(skill, "1.1.0"), activate=False)
    assert final.state == OK
    assert "ACTIVATING" not in stage_names(seen)
    definition = await stub.GetSkillDefinition(
        skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill)
    )
    assert definition.current_version == "1.0.0"
    assert os.readlink(app.store.root / "packages" / skill / "current") == "1.0.0"
    listed = await stub.ListPackages(skill_service_pb2.ListPackagesRequest(skill_id=skill))
    assert [(p.version, p.current) for p in listed.packages] == [("1.1.0", False), ("1.0.0", True)]


async def test_invalid_package_fails_with_the_report_and_leaves_nothing(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    data = make_archive({"SKILL.md": skill_md(skill, "1.0.0"), "../evil": "x"})
    # The version is in the request, so it is reserved up front and released as FAILED.
    final, seen = await install_and_wait(stub, skill, data, version="1.0.0")
    assert final.state == FAILED
    assert final.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    report = resources_pb2.ValidationReport()
    infos = [d for d in final.error.details if d.Is(report.DESCRIPTOR)]
    assert infos, final.error
    infos[0].Unpack(report)
    assert not report.valid
    assert "PATH_TRAVERSAL" in {v.code for v in report.violations}
    info = error_details_pb2.ErrorInfo()
    next(d for d in final.error.details if d.Is(info.DESCRIPTOR)).Unpack(info)
    assert info.reason == "VALIDATION_FAILED"
    assert seen[-1].error.code == final.error.code
    root = app.store.root
    assert not (root / "packages" / skill / "1.0.0").exists()
    assert list((root / "blobs" / "sha256").iterdir()) == []
    assert not any((root / "staging").glob("*/*"))
    states = await db.fetch("SELECT state FROM skill_packages WHERE skill_id = $1", skill)
    assert [r["state"] for r in states] == ["FAILED"]
    # A failed version may be installed again.
    good, _ = await install_and_wait(stub, skill, skill_archive(skill, "1.0.0"))
    assert good.state == OK


async def test_name_mismatch_and_checksum_mismatch_fail(stub: Stub, skill: str) -> None:
    wrong_name, _ = await install_and_wait(stub, skill, skill_archive("other-skill", "1.0.0"))
    assert wrong_name.state == FAILED
    assert "NAME_MISMATCH" in wrong_name.error.message
    data = skill_archive(skill, "1.0.0")
    bad_digest, _ = await install_and_wait(stub, skill, data, sha256="0" * 64)
    assert bad_digest.state == FAILED
    info = error_details_pb2.ErrorInfo()
    next(d for d in bad_digest.error.details if d.Is(info.DESCRIPTOR)).Unpack(info)
    assert info.reason == "CHECKSUM_MISMATCH"


async def test_request_id_deduplicates(stub: Stub, skill: str) -> None:
    data = skill_archive(skill, "1.0.0")
    first = await install(stub, skill, data, request_id="deploy-42")
    second = await install(stub, skill, data, request_id="deploy-42")
    assert second.operation_id == first.operation_id
    listed = await stub.ListOperations(skill_service_pb2.ListOperationsRequest(skill_id=skill))
    assert len(listed.operations) == 1


async def test_spec_errors_are_invalid_argument(stub: Stub, skill: str) -> None:
    from tests.helpers import bad_fields

    data = skill_archive(skill)
    cases = [
        ({"version": "v1"}, "spec.version"),
        ({"sha256": "xyz"}, "spec.sha256"),
        ({"request_id": "r" * 129}, "spec.request_id"),
    ]
    for fields, field in cases:
        err = await expect_status(
            install(stub, skill, data, **fields), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert field in bad_fields(err)
    err = await expect_status(install(stub, "no-such-skill", data), grpc.StatusCode.NOT_FOUND)

    # Declared size differs from what is sent.
    async def short() -> object:
        yield skill_service_pb2.InstallRequest(
            spec=skill_service_pb2.InstallSpec(
                skill_id=skill, upload=skill_service_pb2.UploadSource(size_bytes=len(data) + 10)
            )
        )
        yield skill_service_pb2.InstallRequest(chunk=data)

    err = await expect_status(stub.Install(short()), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason(err) == "SIZE_MISMATCH"


async def test_too_large_upload_is_resource_exhausted(
    app: App, stub: Stub, skill: str, tmp_path: Path
) -> None:
    data = skill_archive(skill, "1.0.0", extra={"big.bin": os.urandom(200_000)})
    from dataclasses import replace

    app.installer._settings = replace(
        app.installer._settings,
        limits=replace(app.installer._settings.limits, max_package_bytes=100_000),
    )
    err = await expect_status(install(stub, skill, data), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert reason(err) == "TOO_LARGE"
    listed = await stub.ListOperations(skill_service_pb2.ListOperationsRequest(skill_id=skill))
    assert listed.operations[0].state == FAILED
    assert not any((app.store.root / "staging").glob("*/*"))


async def test_progress_of_a_finished_operation_is_its_terminal_event(
    stub: Stub, skill: str
) -> None:
    final, _ = await install_and_wait(stub, skill, skill_archive(skill))
    again = await events(stub, final.operation_id)
    assert len(again) == 1
    assert again[0].stage == S.Value("INSTALL_STAGE_DONE")
    await expect_status(
        events(stub, "00000000-0000-0000-0000-000000000000"), grpc.StatusCode.NOT_FOUND
    )
    await expect_status(events(stub, "nope"), grpc.StatusCode.INVALID_ARGUMENT)
