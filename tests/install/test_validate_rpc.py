"""The Validate RPC: same framing and validator as Install, nothing left behind."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2
from tests.helpers import bad_fields, expect_status, reason
from tests.install.conftest import ArchiveServer, Stub, install
from tests.packages import make_archive, skill_archive, skill_md


async def _validate(
    stub: Stub, data: bytes, chunk: int = 64 * 1024, **fields: object
) -> resources_pb2.ValidationReport:
    async def messages() -> AsyncIterator[skill_service_pb2.ValidateRequest]:
        yield skill_service_pb2.ValidateRequest(
            spec=skill_service_pb2.ValidateSpec(
                upload=skill_service_pb2.UploadSource(size_bytes=len(data)),
                **fields,  # type: ignore[arg-type]
            )
        )
        for start in range(0, len(data), chunk):
            yield skill_service_pb2.ValidateRequest(chunk=data[start : start + chunk])

    return await stub.Validate(messages())


async def test_valid_package_report(app: App, stub: Stub) -> None:
    data = skill_archive("pdf-tools", "1.2.3")
    report = await _validate(stub, data, skill_id="pdf-tools", version="1.2.3")
    assert report.valid, report
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.size_bytes == len(data)
    assert report.file_count == 3
    assert report.manifest.name == "pdf-tools"
    assert report.manifest.version == "1.2.3"
    # The definition need not exist, and nothing outlives the call.
    assert not any((app.store.root / "staging").glob("*/*"))
    assert not any((app.store.root / "packages").iterdir())


async def test_invalid_package_report_lists_violations(app: App, stub: Stub) -> None:
    data = make_archive(
        {"SKILL.md": skill_md("other", "1.0.0"), "../escape": "x", "/abs": "y"}, "tar"
    )
    report = await _validate(stub, data, skill_id="pdf-tools", version="2.0.0")
    assert not report.valid
    codes = {v.code for v in report.violations}
    assert {"PATH_TRAVERSAL", "ABSOLUTE_PATH", "NAME_MISMATCH", "VERSION_MISMATCH"} <= codes
    assert all(v.severity == resources_pb2.SEVERITY_ERROR for v in report.violations)
    assert not any((app.store.root / "staging").glob("*/*"))


async def test_checksum_mismatch_is_reported(stub: Stub) -> None:
    data = skill_archive("pdf-tools")
    report = await _validate(stub, data, sha256="f" * 64)
    assert not report.valid
    assert report.violations[0].code == "CHECKSUM_MISMATCH"


async def test_unknown_front_matter_key_is_a_warning(stub: Stub) -> None:
    md = "---\nname: pdf-tools\ndescription: d\nversion: 1.0.0\nhomepage: x\n---\nbody\n"
    report = await _validate(stub, make_archive({"SKILL.md": md}, "zip"))
    assert report.valid
    assert [(v.code, v.severity) for v in report.violations] == [
        ("UNKNOWN_FIELD", resources_pb2.SEVERITY_WARNING)
    ]


async def test_bad_spec_fields_are_invalid_argument(stub: Stub) -> None:
    data = skill_archive("pdf-tools")
    err = await expect_status(
        _validate(stub, data, skill_id="Bad_Id"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert bad_fields(err) == ["spec.skill_id"]
    # Validate speaks of validation, Install of installs.
    assert err.details().startswith("invalid validate request"), err.details()
    err = await expect_status(install(stub, "Bad_Id", data), grpc.StatusCode.INVALID_ARGUMENT)
    assert bad_fields(err) == ["spec.skill_id"]
    assert err.details().startswith("invalid install spec"), err.details()
    err = await expect_status(
        _validate(stub, data, version="1.0"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert bad_fields(err) == ["spec.version"]

    async def chunk_first() -> AsyncIterator[skill_service_pb2.ValidateRequest]:
        yield skill_service_pb2.ValidateRequest(chunk=b"xx")

    err = await expect_status(stub.Validate(chunk_first()), grpc.StatusCode.INVALID_ARGUMENT)
    assert bad_fields(err) == ["spec"]


async def test_oversized_upload_is_resource_exhausted(make_app) -> None:  # type: ignore[no-untyped-def]
    from skillsvc.v1 import skill_service_pb2_grpc

    app: App = await make_app(max_package_bytes=10_000)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        data = skill_archive("pdf-tools", extra={"x.bin": bytes(range(256)) * 200})
        data += b"\0" * max(0, 10_001 - len(data))
        err = await expect_status(_validate(stub, data), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert reason(err) == "TOO_LARGE"
    assert not any((app.store.root / "staging").glob("*/*"))


async def test_validate_from_a_url(make_app, archive_server: ArchiveServer) -> None:  # type: ignore[no-untyped-def]
    from skillsvc.v1 import skill_service_pb2_grpc

    app: App = await make_app(url_allow_private=True)
    archive_server.files["/ok.zip"] = skill_archive("pdf-tools", fmt="zip")
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)

        async def messages() -> AsyncIterator[skill_service_pb2.ValidateRequest]:
            yield skill_service_pb2.ValidateRequest(
                spec=skill_service_pb2.ValidateSpec(url=archive_server.url("/ok.zip"))
            )

        report = await stub.Validate(messages())
    assert report.valid
