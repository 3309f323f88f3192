"""Several hosts: ``skillsvc serve`` processes with their own data dirs sharing one
PostgreSQL database and one S3 bucket (a real SeaweedFS), each materialising what is
current into its own store (SPEC §5).

The scenarios chain on the same processes (starting them is the expensive part):
install on A and B follows; roll back on B to a version B never had and A follows;
a third node joining empty serves every current version and goes SERVING only once
it has them; a damaged blob is refused by the node that must fetch it while the
old version stays current there; a deletion on A removes B's files.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from skillsvc.core.maintenance import fsck
from skillsvc.server import App, installer_settings
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status, reason
from tests.install.conftest import create_skill, events, install
from tests.packages import skill_archive
from tests.processes import Served, free_port
from tests.s3 import SeaweedS3, sigv4_headers

pytestmark = pytest.mark.timeout(240)

T = TypeVar("T")
Stub = skill_service_pb2_grpc.SkillServiceStub
SKILL = "fleet-demo"
PROPAGATION_BOUND_SECONDS = 10.0
"""Generous: notifications arrive in milliseconds; this only catches a node that does
not follow at all (the figure measured is printed)."""


async def _poll(check: Callable[[], T | None], timeout: float = 60) -> T:
    """The first truthy result of ``check``, polled every 10 ms until ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if result:
                return result
            await asyncio.sleep(0.01)


def _current_text(data_dir: Path, skill: str = SKILL) -> str | None:
    try:
        return (data_dir / "store" / "packages" / skill / "current" / "SKILL.md").read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _has(version: str) -> Callable[[Path], Callable[[], bool]]:
    def at(data_dir: Path) -> Callable[[], bool]:
        return lambda: f'version: "{version}"' in (_current_text(data_dir) or "")

    return at


async def _install(stub: Stub, version: str, *, activate: bool = True) -> bytes:
    data = skill_archive(SKILL, version, description=f"release {version}")
    op = await install(stub, SKILL, data, activate=activate)
    seen = await events(stub, op.operation_id)
    assert seen[-1].stage == resources_pb2.INSTALL_STAGE_DONE, seen[-1]
    return data


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as chan:
        try:
            reply = await health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return -1
        return int(reply.status)


async def _rollback(stub: Stub, target: str) -> resources_pb2.Operation:
    return await stub.Rollback(
        skill_service_pb2.RollbackRequest(skill_id=SKILL, target_version=target, reason="test")
    )


def _metrics(addr: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://{addr}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _corrupt_blob(seaweed: SeaweedS3, bucket_url: str, sha256: str) -> None:
    """Overwrite an archive in the bucket with other bytes (same key)."""
    bucket, _, prefix = bucket_url.removeprefix("s3://").partition("/")
    url = f"{seaweed.endpoint}/{bucket}/{prefix}/blobs/sha256/{sha256}"
    body = b"not the archive that was installed"
    response = httpx.put(url, content=body, headers=sigv4_headers("PUT", url, body))
    assert response.status_code == 200, response.text


async def test_hosts_follow_each_other_through_the_database_and_the_bucket(
    serve: Callable[..., Awaitable[Served]],
    db_url: str,
    seaweed: SeaweedS3,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    shared = {"SKILLSVC_DATABASE_URL": db_url, "SKILLSVC_BLOB_STORE": s3_bucket, **seaweed.env()}
    dirs = {name: tmp_path / name for name in ("a", "b", "c")}
    a = await serve(SKILLSVC_DATA_DIR=str(dirs["a"]), **shared)
    # B runs two workers sharing its store: both hear every change and race to follow.
    metrics_b = f"127.0.0.1:{free_port()}"
    b = await serve(
        SKILLSVC_DATA_DIR=str(dirs["b"]),
        SKILLSVC_WORKERS="2",
        SKILLSVC_METRICS_ADDR=metrics_b,
        **shared,
    )
    await asyncio.gather(a.wait_serving(), b.wait_serving())
    async with (
        grpc.aio.insecure_channel(a.address) as chan_a,
        grpc.aio.insecure_channel(b.address) as chan_b,
    ):
        stub_a, stub_b = Stub(chan_a), Stub(chan_b)
        await create_skill(stub_a, SKILL)

        # -- install on A: B follows -------------------------------------------------
        delays = []
        for version in ("1.0.0", "1.1.0"):
            await _install(stub_a, version)
            done = time.monotonic()
            await _poll(_has(version)(dirs["b"]), PROPAGATION_BOUND_SECONDS)
            delays.append(time.monotonic() - done)
        print(f"\npropagation A -> B (install DONE to B's current/SKILL.md): {delays}")
        assert _has("1.1.0")(dirs["a"])()

        # -- roll back on B to a version only A has: B fetches it first, A follows ---
        await _install(stub_a, "1.2.0", activate=False)
        assert not (dirs["b"] / "store" / "packages" / SKILL / "1.2.0").exists()
        op = await _rollback(stub_b, "1.2.0")
        assert op.to_version == "1.2.0"
        assert _has("1.2.0")(dirs["b"])(), "B's link must follow its own rollback at once"
        await _poll(_has("1.2.0")(dirs["a"]), PROPAGATION_BOUND_SECONDS)

        # -- a third node joining empty serves every current version ------------------
        c = await serve(SKILLSVC_DATA_DIR=str(dirs["c"]), **shared)
        await _poll(lambda: b"catch-up" in c.log.read_bytes() or None)
        async with asyncio.timeout(60):
            while await _health(c.address) != health_pb2.HealthCheckResponse.SERVING:
                await asyncio.sleep(0.01)
        # SERVING only once the files are there.
        assert _has("1.2.0")(dirs["c"])()
        log = c.log.read_text()
        assert log.index("catch-up complete") < log.index("health: SERVING"), log
        await c.terminate()

        # -- a damaged blob is refused; the old version stays current -----------------
        data = await _install(stub_a, "2.0.0", activate=False)
        package = await stub_a.GetPackage(
            skill_service_pb2.GetPackageRequest(skill_id=SKILL, version="2.0.0")
        )
        _corrupt_blob(seaweed, s3_bucket, package.sha256)
        assert package.size_bytes == len(data)
        error = await expect_status(_rollback(stub_b, "2.0.0"), grpc.StatusCode.FAILED_PRECONDITION)
        assert reason(error) == "INTEGRITY_CHECK_FAILED"
        assert _has("1.2.0")(dirs["b"])()
        # A has its own intact copy and may switch; B must refuse to follow.
        await _rollback(stub_a, "2.0.0")
        await _poll(lambda: b"materialisation of fleet-demo failed" in b.log.read_bytes())
        assert _has("1.2.0")(dirs["b"])()
        assert not (dirs["b"] / "store" / "packages" / SKILL / "2.0.0").exists()
        await _rollback(stub_a, "1.2.0")
        # Both workers' series, added up by the supervisor's endpoint.
        scraped = _metrics(metrics_b)
        assert scraped[("skill_materialisations_total", (("result", "success"),))] >= 3
        assert scraped[("skill_materialisations_total", (("result", "corrupt"),))] >= 1
        assert scraped[("skill_materialise_lag_seconds_count", ())] >= 2
        assert scraped[("skill_materialised_bytes_total", ())] > 0

        # -- a deletion on A removes B's files ----------------------------------------
        await stub_a.DeleteSkillDefinition(
            skill_service_pb2.DeleteSkillDefinitionRequest(skill_id=SKILL, force=True)
        )
        await _poll(
            lambda: not (dirs["b"] / "store" / "packages" / SKILL).exists(),
            PROPAGATION_BOUND_SECONDS,
        )
    assert await a.terminate() == 0
    assert await b.terminate() == 0


async def test_after_a_lost_notification_the_reconnected_node_catches_up(
    seaweed: SeaweedS3,
    s3_bucket: str,
    make_app: Callable[..., Awaitable[App]],
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """In one process (cheaper): two servers with stores of their own on one bucket."""
    shared = {"blob_store": s3_bucket, "blob_store_options": seaweed.options()}
    a = await make_app(data_dir=tmp_path / "a", **shared)
    b = await make_app(data_dir=tmp_path / "b", **shared)
    async with grpc.aio.insecure_channel(a.address) as chan:
        stub = Stub(chan)
        await create_skill(stub, SKILL)
        for version in ("1.0.0", "1.1.0"):
            await _install(stub, version)
            await _poll(_has(version)(b.store.root.parent))
    # A change whose notification B never hears (triggers off for this one session:
    # what a NOTIFY sent while B's LISTEN connection was down looks like).
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("UPDATE skill_definitions SET current_version = '1.0.0'")
    await asyncio.sleep(0.2)
    assert _has("1.1.0")(b.store.root.parent)(), "nothing told B yet"
    # B's LISTEN connection drops and comes back: B reconciles every skill.
    assert await db.fetchval("SELECT pg_terminate_backend($1)", b.listener.backend_pid)
    await _poll(_has("1.0.0")(b.store.root.parent), PROPAGATION_BOUND_SECONDS)


async def test_a_version_installed_again_with_other_bytes_while_a_node_is_down_is_fetched_again(
    seaweed: SeaweedS3,
    s3_bucket: str,
    make_app: Callable[..., Awaitable[App]],
    tmp_path: Path,
) -> None:
    """A tree is trusted by the archive it came from, not by its version's name."""
    shared = {"blob_store": s3_bucket, "blob_store_options": seaweed.options()}
    a = await make_app(data_dir=tmp_path / "a", **shared)
    b = await make_app(data_dir=tmp_path / "b", **shared)
    b_dir = b.store.root.parent

    async def put(stub: Stub, version: str, text: str, *, activate: bool = True) -> None:
        data = skill_archive(SKILL, version, description=text)
        op = await install(stub, SKILL, data, activate=activate)
        assert (await events(stub, op.operation_id))[-1].stage == resources_pb2.INSTALL_STAGE_DONE

    async with grpc.aio.insecure_channel(a.address) as chan:
        stub = Stub(chan)
        await create_skill(stub, SKILL)
        await put(stub, "1.0.0", "OLD BYTES X")
        await _poll(lambda: "OLD BYTES X" in (_current_text(b_dir) or ""))
        await put(stub, "1.1.0", "OLD BYTES X2")
        await _poll(lambda: "OLD BYTES X2" in (_current_text(b_dir) or ""))
        # B now holds 1.0.0 (not current) and 1.1.0 (current) from the old archives.
        await b.stop(0)
        await put(stub, "2.0.0", "two")
        for version in ("1.0.0", "1.1.0"):
            await stub.DeletePackage(
                skill_service_pb2.DeletePackageRequest(skill_id=SKILL, version=version)
            )
        await put(stub, "1.0.0", "NEW BYTES Y", activate=False)
        await put(stub, "1.1.0", "NEW BYTES Y2")  # current again, under the same name
    b = await make_app(data_dir=b_dir, **shared)
    async with asyncio.timeout(60):
        while not b.materialiser.caught_up:
            await asyncio.sleep(0.01)
    assert "NEW BYTES Y2" in (_current_text(b_dir) or ""), "B serves the old 1.1.0"
    # Rolling back on B to the other version installed again fetches it (it used to
    # fail its integrity check against the old tree).
    async with grpc.aio.insecure_channel(b.address) as chan:
        op = await _rollback(Stub(chan), "1.0.0")
    assert op.to_version == "1.0.0"
    assert "NEW BYTES Y" in (_current_text(b_dir) or "")
    package = await b.db.repo.get_package(SKILL, "1.0.0", None)
    assert package is not None
    assert b.store.placed_sha256(SKILL, "1.0.0") == package.sha256


async def test_a_version_fsck_marked_failed_and_installed_again_is_fetched_again(
    seaweed: SeaweedS3,
    s3_bucket: str,
    make_app: Callable[..., Awaitable[App]],
    tmp_path: Path,
) -> None:
    """fsck --repair marks a version FAILED; B keeps its tree; a re-install under the
    same name with other bytes must not make B switch to that old tree."""
    shared = {"blob_store": s3_bucket, "blob_store_options": seaweed.options()}
    a = await make_app(data_dir=tmp_path / "a", **shared)
    b = await make_app(data_dir=tmp_path / "b", **shared)
    b_dir = b.store.root.parent
    async with grpc.aio.insecure_channel(a.address) as chan:
        stub = Stub(chan)
        await create_skill(stub, SKILL)
        for version, text in (("1.0.0", "OLD BYTES X"), ("1.1.0", "one one")):
            op = await install(stub, SKILL, skill_archive(SKILL, version, description=text))
            assert (await events(stub, op.operation_id))[-1].stage == (
                resources_pb2.INSTALL_STAGE_DONE
            )
            await _poll(lambda t=text: t in (_current_text(b_dir) or ""))  # type: ignore[misc]
        old = await stub.GetPackage(
            skill_service_pb2.GetPackageRequest(skill_id=SKILL, version="1.0.0")
        )
        _corrupt_blob(seaweed, s3_bucket, old.sha256)
        report = await fsck(
            a.db,
            a.store,
            repair=True,
            limits=installer_settings(a.settings).limits,
            stale_after=60,
            blobs=a.blobs,
        )
        (repaired,) = [d["repair"] for d in report["damaged_packages"]]
        assert repaired.startswith("marked FAILED: its archive is missing or damaged"), repaired
        assert (b_dir / "store" / "packages" / SKILL / "1.0.0").is_dir()
        op = await install(stub, SKILL, skill_archive(SKILL, "1.0.0", description="NEW BYTES Y"))
        assert (await events(stub, op.operation_id))[-1].stage == resources_pb2.INSTALL_STAGE_DONE
    await _poll(lambda: "NEW BYTES Y" in (_current_text(b_dir) or ""), PROPAGATION_BOUND_SECONDS)
