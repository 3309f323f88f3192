"""``/metrics``: the grpc-ecosystem per-RPC series and the install series, scraped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status
from tests.install.conftest import ArchiveServer, install_url, upload_messages, upload_spec
from tests.observability.conftest import SECRET, mint, parse, scrape, value
from tests.packages import skill_archive
from tests.processes import free_port

SkillService = skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"]
SERVICE = SkillService.full_name


def rpc(method: str, grpc_type: str = "unary", service: str = SERVICE) -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method}


async def test_every_method_is_preinitialised_with_code_ok(make_app: Any) -> None:
    port = free_port()
    await make_app(metrics_addr=f"127.0.0.1:{port}")
    samples = await scrape(port)
    kinds = {(False, False): "unary", (True, False): "client_stream"}
    kinds |= {(False, True): "server_stream", (True, True): "bidi_stream"}
    services = [
        SkillService,
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ]
    methods = [(s.full_name, m) for s in services for m in s.methods]
    assert len(methods) > len(SkillService.methods) + 2  # Health: Check, Watch…
    for service, method in methods:
        labels = rpc(method.name, kinds[method.client_streaming, method.server_streaming], service)
        for name in (
            "grpc_server_started_total",
            "grpc_server_msg_received_total",
            "grpc_server_msg_sent_total",
            "grpc_server_handling_seconds_count",
        ):
            assert (name, frozenset(labels.items())) in samples, (name, labels)
        handled = frozenset({**labels, "grpc_code": "OK"}.items())
        assert ("grpc_server_handled_total", handled) in samples
    # The four shapes, as the grpc-ecosystem names them.
    assert ("grpc_server_started_total", frozenset(rpc("Install", "client_stream").items())) in (
        samples
    )
    assert (
        "grpc_server_started_total",
        frozenset(rpc("InstallProgress", "server_stream").items()),
    ) in samples
    assert not any(name.startswith("skillsvc_rpc") for name, _ in samples)
    # The runbook's series are there before the first install, both outcomes.
    for status in ("success", "failed"):
        for source in ("upload", "url"):
            labels = frozenset({"status": status, "source_type": source}.items())
            assert ("skill_install_total", labels) in samples


async def test_successful_failed_and_refused_calls_are_counted(make_app: Any) -> None:
    port = free_port()
    app = await make_app(auth="jwt", jwt_secret=SECRET, metrics_addr=f"127.0.0.1:{port}")
    admin = (("authorization", f"Bearer {mint()}"),)
    before = await scrape(port)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await stub.CreateSkillDefinition(
            skill_service_pb2.CreateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(skill_id="metered")
            ),
            metadata=admin,
        )
        await expect_status(
            stub.GetSkillDefinition(
                skill_service_pb2.GetSkillDefinitionRequest(skill_id="absent"), metadata=admin
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        await expect_status(  # refused: no token
            stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest()),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        await expect_status(  # refused: a reader may not create
            stub.CreateSkillDefinition(
                skill_service_pb2.CreateSkillDefinitionRequest(
                    definition=resources_pb2.SkillDefinition(skill_id="unwanted")
                ),
                metadata=(("authorization", f"Bearer {mint('bob', 'acme', ('reader',))}"),),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        data = skill_archive("metered", "1.0.0")
        messages = [m async for m in upload_messages(upload_spec("metered", data), data, 1024)]
        op = await stub.Install(iter(messages), metadata=admin)
        progress = stub.InstallProgress(
            skill_service_pb2.InstallProgressRequest(operation_id=op.operation_id),
            metadata=admin,
        )
        events = [event async for event in progress]
        assert events[-1].stage == resources_pb2.INSTALL_STAGE_DONE
        broken = b"not an archive at all"
        failed = await stub.Install(
            upload_messages(upload_spec("metered", broken, version="2.0.0"), broken),
            metadata=admin,
        )
        progress = stub.InstallProgress(
            skill_service_pb2.InstallProgressRequest(operation_id=failed.operation_id),
            metadata=admin,
        )
        assert [e async for e in progress][-1].stage == resources_pb2.INSTALL_STAGE_FAILED
    after = await scrape(port)

    def delta(name: str, labels: dict[str, str]) -> float:
        return value(after, name, labels) - value(before, name, labels)

    create = rpc("CreateSkillDefinition")
    assert delta("grpc_server_started_total", create) == 2
    assert delta("grpc_server_handled_total", {**create, "grpc_code": "PERMISSION_DENIED"}) == 1
    assert delta("grpc_server_handled_total", {**create, "grpc_code": "OK"}) == 1
    assert delta("grpc_server_msg_received_total", create) == 2
    assert delta("grpc_server_msg_sent_total", create) == 1  # the refused one sent nothing
    assert delta("grpc_server_handling_seconds_count", create) == 2
    assert delta("grpc_server_handling_seconds_bucket", {**create, "le": "+Inf"}) == 2
    get = rpc("GetSkillDefinition")
    assert delta("grpc_server_handled_total", {**get, "grpc_code": "NOT_FOUND"}) == 1
    assert delta("grpc_server_handled_total", {**get, "grpc_code": "OK"}) == 0
    assert delta("grpc_server_msg_sent_total", get) == 0
    listed = rpc("ListSkillDefinitions")
    assert delta("grpc_server_started_total", listed) == 1
    assert delta("grpc_server_handled_total", {**listed, "grpc_code": "UNAUTHENTICATED"}) == 1
    install = rpc("Install", "client_stream")
    # Every message of both uploads counted: spec + chunks, then spec + one chunk.
    assert delta("grpc_server_msg_received_total", install) == len(messages) + 2
    assert delta("grpc_server_handled_total", {**install, "grpc_code": "OK"}) == 2
    watched = rpc("InstallProgress", "server_stream")
    assert delta("grpc_server_msg_sent_total", watched) >= len(events) + 1
    assert delta("grpc_server_handled_total", {**watched, "grpc_code": "OK"}) == 2

    upload = {"source_type": "upload"}
    assert delta("skill_install_total", {**upload, "status": "success"}) == 1
    assert delta("skill_install_total", {**upload, "status": "failed"}) == 1
    assert delta("skill_install_duration_seconds_count", {}) == 2
    buckets = {labels for name, labels in after if name == "skill_install_duration_seconds_bucket"}
    bounds = {dict(labels)["le"] for labels in buckets}
    assert {"0.1", "0.5", "1.0", "5.0", "10.0", "30.0", "60.0", "120.0"} <= bounds
    assert value(after, "skill_storage_bytes") >= len(data)
    assert value(after, "skill_installs_running") == 0
    assert value(after, "skill_installs_queued") == 0


async def test_running_queued_and_pool_gauges(make_app: Any) -> None:
    port = free_port()
    app = await make_app(
        metrics_addr=f"127.0.0.1:{port}",
        max_concurrent_installs=1,
        url_allow_private=True,
        db_pool_size=7,
    )
    archives = ArchiveServer()
    await archives.start()
    archives.gate.clear()  # downloads hold their slot until the gate opens
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = skill_service_pb2_grpc.SkillServiceStub(channel)
            await stub.CreateSkillDefinition(
                skill_service_pb2.CreateSkillDefinitionRequest(
                    definition=resources_pb2.SkillDefinition(skill_id="gauged")
                )
            )
            for version in ("1.0.0", "1.0.1"):
                archives.files[f"/{version}.tgz"] = skill_archive("gauged", version)
            first = await install_url(stub, "gauged", archives.url("/1.0.0.tgz"))
            second = await install_url(stub, "gauged", archives.url("/1.0.1.tgz"))
            async with asyncio.timeout(30):
                while True:
                    samples = await scrape(port)
                    if value(samples, "skill_installs_running") == 1:
                        break
                    await asyncio.sleep(0.05)
            assert value(samples, "skill_installs_queued") == 1
            app.sample_pool()
            samples = await scrape(port)
            assert value(samples, "skillsvc_db_pool_max") == 7
            assert 1 <= value(samples, "skillsvc_db_pool_size") <= 7
            assert 0 <= value(samples, "skillsvc_db_pool_in_use") <= 7
            archives.gate.set()
            for op in (first, second):
                call = stub.InstallProgress(
                    skill_service_pb2.InstallProgressRequest(operation_id=op.operation_id)
                )
                assert [e async for e in call][-1].stage == resources_pb2.INSTALL_STAGE_DONE
            # DONE is announced when its transaction commits; the install's task lowers
            # the gauge a few steps later (connection released, pipeline returned).
            async with asyncio.timeout(30):
                while value(samples := await scrape(port), "skill_installs_running") != 0:
                    await asyncio.sleep(0.02)
            assert value(samples, "skill_installs_queued") == 0
            url = {"status": "success", "source_type": "url"}
            assert value(samples, "skill_install_total", url) >= 2
    finally:
        await archives.stop()


def test_metrics_work_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two worker processes write; one registry reading the directory sums them."""
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "PATH": "/usr/bin:/bin"}
    worker = textwrap.dedent(
        """
        import sys
        from skillsvc import metrics
        from skillsvc.v1 import skill_service_pb2
        metrics.init_grpc_metrics([skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"]])
        metrics.INSTALLS_RUNNING.inc(2)
        metrics.INSTALL_TOTAL.labels("success", "upload").inc()
        metrics.STORAGE_BYTES.set(int(sys.argv[1]))
        metrics.STORAGE_BYTES.inc(5)
        metrics.HEALTHY.set(1)
        metrics.GRPC_STARTED.labels("unary", "skillsvc.v1.SkillService", "GetPackage").inc()
        """
    )
    for storage in ("1000", "2000"):  # the second writes last: the most recent value
        subprocess.run([sys.executable, "-c", worker, storage], env=env, check=True, cwd=Path.cwd())
    collect = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", collect], env=env, check=True, capture_output=True, text=True
    ).stdout
    samples = parse(out)
    assert (
        value(samples, "skill_install_total", {"status": "success", "source_type": "upload"}) == 2
    )
    labels = rpc("GetPackage")
    assert value(samples, "grpc_server_started_total", labels) == 2
    assert ("grpc_server_handled_total", frozenset({**labels, "grpc_code": "OK"}.items())) in (
        samples
    )
    assert value(samples, "skill_storage_bytes") == 2005
    assert value(samples, "skill_installs_running") == 4  # livesum: 2 per worker
    assert value(samples, "skillsvc_healthy") == 1


async def test_an_install_whose_commit_fails_is_counted_once_as_failed(
    make_app: Any, db: Any
) -> None:
    """The READY transaction fails at COMMIT (a deferred trigger of the test's own raises
    there): the install is counted as failed only, never as a success too."""
    from prometheus_client import REGISTRY

    from tests.install.conftest import create_skill, install

    await db.execute(
        """
        CREATE FUNCTION test_refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'commit refused by the test'; END $$;
        CREATE CONSTRAINT TRIGGER test_refuse_ready AFTER UPDATE ON skill_packages
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.state = 'READY' AND NEW.skill_id = 'doomed')
            EXECUTE FUNCTION test_refuse_commit();
        """
    )

    def count(status: str) -> float:
        labels = {"status": status, "source_type": "upload"}
        return REGISTRY.get_sample_value("skill_install_total", labels) or 0.0

    app = await make_app()
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await create_skill(stub, "doomed")
        success, failed = count("success"), count("failed")
        op = await install(stub, "doomed", skill_archive("doomed", "1.0.0"), version="1.0.0")
        request = skill_service_pb2.GetOperationRequest(operation_id=op.operation_id)
        async with asyncio.timeout(30):
            while (await stub.GetOperation(request)).state != resources_pb2.OPERATION_STATE_FAILED:
                await asyncio.sleep(0.02)
    assert (count("success"), count("failed")) == (success, failed + 1)
    assert await db.fetchval("SELECT state FROM skill_packages WHERE skill_id = 'doomed'") in (
        None,
        "FAILED",
    )
    # The link swapped inside the failed transaction went back, and the tree went.
    assert app.store.current_version("doomed") is None
    assert not app.store.version_dir("doomed", "1.0.0").exists()
