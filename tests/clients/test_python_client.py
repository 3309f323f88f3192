"""The Python library (clients/python) against a real server, in both flavours."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from pathlib import Path

import grpc
import pytest

from skillsvc.config import Settings
from skillsvc.server import App, build_server
from skillsvc_client import (
    AsyncClient,
    Client,
    Connection,
    InstallFailed,
    IntegrityError,
    InvalidArgument,
    LocalError,
    NotFound,
    PermissionDenied,
    RetryPolicy,
    Unavailable,
    pack_folder,
)
from skillsvc_client.v1 import resources_pb2
from tests.clients.conftest import HttpSource, make_skill_folder
from tests.packages import make_archive, skill_archive, skill_md

DONE = resources_pb2.INSTALL_STAGE_DONE
RECEIVING = resources_pb2.INSTALL_STAGE_RECEIVING
SUCCEEDED = resources_pb2.OPERATION_STATE_SUCCEEDED
FAILED = resources_pb2.OPERATION_STATE_FAILED


def test_packing_a_folder_depends_only_on_names_contents_and_exec_bits(tmp_path: Path) -> None:
    a = make_skill_folder(tmp_path / "a")
    b = make_skill_folder(tmp_path / "b")  # other junk bytes, other times
    (b / "references" / "guide.md").chmod(0o600)
    import os

    os.utime(b / "SKILL.md", (1, 1))
    assert pack_folder(a) == pack_folder(b)
    with tarfile.open(fileobj=io.BytesIO(pack_folder(a))) as tf:
        members = {m.name: m for m in tf.getmembers()}
    # Sorted, junk left out, fixed owners, times and modes apart from the exec bit.
    assert list(members) == ["SKILL.md", "references/guide.md", "scripts/run.sh"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members.values()} == {
        (0, 0, "", "", 315_532_800)
    }
    assert members["scripts/run.sh"].mode == 0o755
    assert members["references/guide.md"].mode == 0o644
    # Contents and the exec bit do change the digest.
    (b / "references" / "guide.md").chmod(0o700)
    assert pack_folder(a) != pack_folder(b)
    with pytest.raises(LocalError, match=r"no SKILL\.md"):
        pack_folder(tmp_path)
    (a / "scripts" / "link").symlink_to("run.sh")
    with pytest.raises(LocalError, match="symbolic links"):
        pack_folder(a)


async def test_install_a_folder_twice_gives_one_version(app: App, tmp_path: Path) -> None:
    folder = make_skill_folder(tmp_path / "pdf-tools", big=True)
    async with AsyncClient(Connection(app.address)) as client:
        await client.create("pdf-tools")
        install = client.install(folder)
        events = [event async for event in install]
        op = await install.wait()
        assert op.state == SUCCEEDED and op.version == "1.0.0"
        # The upload, chunk by chunk (1 MiB), then the server's stages to DONE.
        uploads = [e for e in events if e.stage == RECEIVING and not e.operation_id]
        total = len(install.package.data) if install.package else 0
        assert [e.bytes_done for e in uploads] == [
            min(total, (i + 1) << 20) for i in range(len(uploads))
        ]
        assert len(uploads) == 3
        assert events[-1].stage == DONE
        assert {e.operation_id for e in events[len(uploads) :]} == {op.operation_id}
        assert op.request_id == install.request_id

        again = client.install(folder)
        second = await again.wait()
        assert again.sha256 == install.sha256
        assert second.operation_id != op.operation_id and second.state == SUCCEEDED
        packages = await client.versions("pdf-tools")
        assert [(p.version, p.sha256) for p in packages] == [("1.0.0", install.sha256)]
        assert install.sha256 == hashlib.sha256(pack_folder(folder)).hexdigest()


async def test_install_from_a_url(app: App, http_source: HttpSource) -> None:
    http_source.files["/mirror.tgz"] = skill_archive("mirror", "2.0.0")
    async with AsyncClient(Connection(app.address)) as client:
        await client.create("mirror")
        with pytest.raises(LocalError, match="skill id"):
            client.install(http_source.url("/mirror.tgz"))
        op = await client.install(http_source.url("/mirror.tgz"), skill="mirror").wait()
        package = await client.package("mirror")
        assert (op.version, package.source_type) == ("2.0.0", resources_pb2.SOURCE_TYPE_URL)
        assert package.sha256 == hashlib.sha256(http_source.files["/mirror.tgz"]).hexdigest()


async def test_a_hostile_archive_fails_naming_the_violation(app: App) -> None:
    hostile = make_archive({"SKILL.md": skill_md("pdf-tools"), "../escape": "x"}, "zip")
    async with AsyncClient(Connection(app.address)) as client:
        await client.create("pdf-tools")
        report = await client.validate(hostile)
        assert not report.valid
        assert [v.code for v in report.violations] == ["PATH_TRAVERSAL"]
        misnamed = await client.validate(make_archive({"SKILL.md": skill_md("Bad_Name")}))
        assert "NAME_INVALID" in [v.code for v in misnamed.violations]
        with pytest.raises(InstallFailed) as caught:
            await client.install(hostile).wait()
        error = caught.value
        assert error.operation.state == FAILED
        assert error.report is not None
        assert "PATH_TRAVERSAL (../escape)" in str(error)


async def test_watch_rollback_download_and_errors(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skillsvc_client import _common

    monkeypatch.setattr(_common, "PAGE_SIZE", 1)  # every list below spans pages
    async with AsyncClient(Connection(app.address)) as client:
        await client.create("pdf-tools")
        first = await client.install(skill_archive("pdf-tools", "1.0.0")).wait()
        await client.install(skill_archive("pdf-tools", "1.1.0")).wait()
        assert [p.version for p in await client.versions("pdf-tools")] == ["1.1.0", "1.0.0"]
        watched = [e async for e in client.watch(first.operation_id)]
        assert [e.stage for e in watched] == [DONE]  # a finished operation: its end only

        back = await client.rollback("pdf-tools", reason="1.1.0 breaks PDFs")
        assert (back.from_version, back.to_version) == ("1.1.0", "1.0.0")
        assert (await client.get("pdf-tools")).current_version == "1.0.0"
        history = await client.history("pdf-tools")
        assert [op.type for op in history] == [
            resources_pb2.OPERATION_TYPE_ROLLBACK,
            resources_pb2.OPERATION_TYPE_INSTALL,
            resources_pb2.OPERATION_TYPE_INSTALL,
        ]

        target = tmp_path / "out" / "pdf.tgz"
        target.parent.mkdir()
        info = await client.download("pdf-tools", target, version="1.1.0")
        assert target.read_bytes() == skill_archive("pdf-tools", "1.1.0")
        assert info.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()

        with pytest.raises(NotFound) as missing:
            await client.get("no-such-skill")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        assert missing.value.reason  # the ErrorInfo reason travelled
        with pytest.raises(InvalidArgument) as bad:
            await client.create("Not_A_Valid_Id")
        assert [v.field for v in bad.value.field_violations] == ["definition.skill_id"]
        assert "definition.skill_id" in str(bad.value)


def test_a_download_that_does_not_match_its_digest_leaves_no_file(tmp_path: Path) -> None:
    from skillsvc_client._files import write_verified
    from skillsvc_client.v1 import skill_service_pb2

    info = skill_service_pb2.PackageInfo(
        skill_id="x", version="1", sha256=hashlib.sha256(b"abc").hexdigest(), size_bytes=3
    )
    write_verified(tmp_path / "ok", [b"a", b"bc"], info)
    assert (tmp_path / "ok").read_bytes() == b"abc"
    with pytest.raises(IntegrityError, match="sha256"):
        write_verified(tmp_path / "bad", [b"abd"], info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


async def test_retry_of_a_failed_url_install(app: App, http_source: HttpSource) -> None:
    async with AsyncClient(Connection(app.address)) as client:
        await client.create("mirror")
        with pytest.raises(InstallFailed) as caught:
            await client.install(http_source.url("/late.tgz"), skill="mirror").wait()
        failed = caught.value.operation
        http_source.files["/late.tgz"] = skill_archive("mirror", "1.0.0")
        retried = await client.retry(failed.operation_id)
        final = await client.wait(retried.operation_id)
        assert (final.state, final.attempt, final.retry_of) == (
            SUCCEEDED,
            2,
            failed.operation_id,
        )


async def test_the_blocking_client(app: App, tmp_path: Path) -> None:
    folder = make_skill_folder(tmp_path / "pdf-tools", version="3.0.0", big=True)

    def scenario() -> None:
        with Client(Connection(app.address)) as client:
            client.create("pdf-tools", description="PDF")
            install = client.install(folder)
            events = list(install)
            uploads = [e.bytes_done for e in events if e.stage == RECEIVING and not e.operation_id]
            assert len(uploads) == 3 and uploads[-1] == len(pack_folder(folder))
            assert events[-1].stage == DONE
            op = install.wait()
            assert op.version == "3.0.0"
            assert client.install(folder).wait().version == "3.0.0"
            assert [p.version for p in client.versions("pdf-tools")] == ["3.0.0"]
            updated = client.update("pdf-tools", display_name="PDF tools", active=False)
            assert (updated.display_name, updated.active) == ("PDF tools", False)
            assert [d.skill_id for d in client.list()] == []
            assert [d.skill_id for d in client.list(include_inactive=True)] == ["pdf-tools"]
            client.download("pdf-tools", tmp_path / "copy.tgz")
            assert (tmp_path / "copy.tgz").read_bytes() == pack_folder(folder)
            client.delete("pdf-tools", force=True)
            with pytest.raises(NotFound):
                client.get("pdf-tools")

    await asyncio.to_thread(scenario)


class _Signalling(RetryPolicy):
    """A retry policy that tells the test when the first attempt has failed."""

    def __init__(self, failed: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(attempts=100, initial_backoff=0.05, max_backoff=0.2)
        object.__setattr__(self, "_failed", failed)
        object.__setattr__(self, "_loop", loop)

    def delays(self):  # type: ignore[no-untyped-def]
        for delay in super().delays():
            self._loop.call_soon_threadsafe(self._failed.set)  # type: ignore[attr-defined]
            yield delay


async def test_unavailable_is_retried_and_an_install_runs_once(
    make_app, settings: Settings
) -> None:  # type: ignore[no-untyped-def]
    from tests.processes import free_port

    # The definition exists before the server the client will reach comes up.
    first = await build_server(settings)
    await first.start()
    async with AsyncClient(Connection(first.address)) as admin:
        await admin.create("pdf-tools")
    await first.stop(0)

    port = free_port()
    failed = asyncio.Event()
    connection = Connection(
        f"127.0.0.1:{port}", retry=_Signalling(failed, asyncio.get_running_loop())
    )
    async with AsyncClient(connection) as client:
        install = client.install(skill_archive("pdf-tools", "1.0.0"))
        attempt = asyncio.create_task(install.wait())
        await failed.wait()  # nothing listens yet: UNAVAILABLE, backing off
        await make_app(listen_addr=f"127.0.0.1:{port}")
        op = await attempt
        assert op.state == SUCCEEDED
        # A repeat with the same request_id (what a retry sends) is the same operation.
        repeat = client.install(skill_archive("pdf-tools", "1.0.0"), request_id=install.request_id)
        assert (await repeat.wait()).operation_id == op.operation_id
        history = await client.history("pdf-tools")
        assert [o.request_id for o in history] == [install.request_id]


async def test_tls_mutual_tls_and_a_token(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.auth.certs import CertificateAuthority
    from tests.auth.conftest import SECRET, mint

    ca = CertificateAuthority()
    cert, key = ca.issue("skillsvc", server=True).write(tmp_path, "server")
    client_cert, client_key = ca.issue("alice", server=False).write(tmp_path, "client")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    app: App = await make_app(
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=tmp_path / "ca.pem",
        auth="jwt",
        jwt_secret=SECRET,
    )
    secure = Connection(
        app.address,
        ca_file=tmp_path / "ca.pem",
        cert_file=client_cert,
        key_file=client_key,
        server_name="localhost",
        retry=RetryPolicy(attempts=1),
    )
    admin = Connection(**{**secure.__dict__, "token": mint("root", "", ["admin"])})
    async with AsyncClient(admin) as client:
        created = await client.create("pdf-tools", description="PDF")
        assert created.skill_id == "pdf-tools"
    reader = Connection(**{**secure.__dict__, "token": mint("bob", "acme", ["reader"])})
    async with AsyncClient(reader) as client:
        assert [d.skill_id for d in await client.list()] == ["pdf-tools"]
        with pytest.raises(PermissionDenied) as denied:
            await client.create("other")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    async with AsyncClient(secure) as client:  # no token
        with pytest.raises(PermissionDenied) as anonymous:
            await client.list()
        assert anonymous.value.code == grpc.StatusCode.UNAUTHENTICATED
    no_client_cert = Connection(
        app.address,
        ca_file=tmp_path / "ca.pem",
        server_name="localhost",
        retry=RetryPolicy(attempts=1),
    )
    async with AsyncClient(no_client_cert) as client:
        from skillsvc_client import Unavailable

        with pytest.raises(Unavailable):
            await client.list()


async def test_deadlines_bound_every_call(app: App, http_source: HttpSource) -> None:
    http_source.files["/slow.tgz"] = skill_archive("mirror", "1.0.0")
    http_source.gate.clear()  # the download hangs until the test lets it go
    impatient = Connection(app.address, transfer_timeout=0.5, retry=RetryPolicy(attempts=1))
    async with AsyncClient(Connection(app.address)) as client, AsyncClient(impatient) as hasty:
        await client.create("mirror")
        install = client.install(http_source.url("/slow.tgz"), skill="mirror")
        async for event in install:
            if event.operation_id:
                break
        assert install.operation is not None
        with pytest.raises(Unavailable) as late:
            await hasty.wait(install.operation.operation_id)
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        http_source.gate.set()
        assert (await client.wait(install.operation.operation_id)).state == SUCCEEDED
