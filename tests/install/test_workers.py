"""``serve`` with several worker processes: real supervisor, real workers, real signals.

Workers share one port through SO_REUSEPORT, so the kernel hashes each new connection
to one of them: the tests open a fresh channel per call to reach both, and tell the
workers apart by the owner of each operation (every worker is an instance with its
own row in ``skill_instances``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.install.conftest import ArchiveServer, create_skill, events, install, install_url
from tests.packages import skill_archive
from tests.processes import Served, child_env, free_port

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")
Stub = skill_service_pb2_grpc.SkillServiceStub


async def _poll(check: Callable[[], Awaitable[T | None]], timeout: float = 60) -> T:
    """The first truthy result of ``check``, polled until ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.1)


async def _instance_pids(db_url: str) -> set[int]:
    conn = await asyncpg.connect(db_url)
    try:
        return {row["pid"] for row in await conn.fetch("SELECT pid FROM skill_instances")}
    finally:
        await conn.close()


async def _owner_pid(db_url: str, operation_id: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        pid = await conn.fetchval(
            "SELECT i.pid FROM skill_install_logs l JOIN skill_instances i"
            " ON i.instance_id = l.owner WHERE l.operation_id = $1::uuid",
            operation_id,
        )
    finally:
        await conn.close()
    assert pid is not None, "every operation is owned by a live worker's instance"
    return int(pid)


def _parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, reading
        return False
    return state != "Z"


async def _workers(served: Served, db_url: str, count: int) -> set[int]:
    """The pids of ``count`` live workers, once each has its heartbeat row."""

    async def check() -> set[int] | None:
        pids = {p for p in await _instance_pids(db_url) if _alive(p)}
        return pids if len(pids) == count else None

    pids = await _poll(check)
    assert all(_parent_of(pid) == served.proc.pid for pid in pids)
    return pids


async def test_workers_share_one_port_and_stop_together_on_sigterm(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    # Port 0: the supervisor picks one port for every worker and reports it.
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url, SKILLSVC_WORKERS="2", SKILLSVC_LISTEN_ADDR="127.0.0.1:0"
    )
    assert not served.address.endswith(":0")
    await served.wait_serving()
    pids = await _workers(served, db_url, 2)
    assert served.proc.pid not in pids
    # gRPC lives in the workers only: the supervisor never loaded its C core.
    assert "cygrpc" not in Path(f"/proc/{served.proc.pid}/maps").read_text()
    assert all("cygrpc" in Path(f"/proc/{pid}/maps").read_text() for pid in pids)
    # Both answer on the announced port: fresh connections until each owned an install.
    owners: set[int] = set()
    for i in range(40):
        async with grpc.aio.insecure_channel(served.address) as chan:
            stub = Stub(chan)
            if i == 0:
                await create_skill(stub, "both")
            op = await install(stub, "both", skill_archive("both", f"1.0.{i}"))
            owners.add(await _owner_pid(db_url, op.operation_id))
            assert (await events(stub, op.operation_id))[-1].state == (
                resources_pb2.OPERATION_STATE_SUCCEEDED
            )
        if owners == pids:
            break
    assert owners == pids

    # SIGHUP (key reloads, SPEC §7) is passed on to the workers and stops nobody.
    served.proc.send_signal(signal.SIGHUP)

    async def both_told() -> bool:
        lines = served.log.read_text().splitlines()
        return sum("[worker" in line and "SIGHUP" in line for line in lines) == 2

    await _poll(both_told)
    assert all(_alive(pid) for pid in pids)
    await served.wait_serving()

    assert await served.terminate() == 0
    assert not any(_alive(pid) for pid in pids)
    # Each worker stopped like a single process: it removed its own heartbeat row.
    assert await _instance_pids(db_url) == set()
    assert "workers exited with [0, 0]" in served.log.read_text()


async def test_a_worker_killed_under_load_is_reaped_and_replaced(  # type: ignore[no-untyped-def]
    serve, db_url: str, archive_server: ArchiveServer, tmp_path: Path
) -> None:
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_WORKERS="2",
        SKILLSVC_URL_ALLOW_PRIVATE="true",
        SKILLSVC_HEARTBEAT_SECONDS="0.5",
        SKILLSVC_DATA_DIR=str(tmp_path / "workers"),
    )
    await served.wait_serving()
    pids = await _workers(served, db_url, 2)
    # Load: URL installs held half-way by the archive server, spread over both workers
    # by opening a fresh connection for each, until each worker runs at least two.
    archive_server.gate.clear()
    by_owner: dict[int, list[str]] = {pid: [] for pid in pids}
    for i in range(60):
        skill = f"held-{i}"
        archive_server.files[f"/{skill}.tgz"] = skill_archive(skill, "1.0.0")
        async with grpc.aio.insecure_channel(served.address) as chan:
            stub = Stub(chan)
            await create_skill(stub, skill)
            op = await install_url(stub, skill, archive_server.url(f"/{skill}.tgz"))
        by_owner[await _owner_pid(db_url, op.operation_id)].append(op.operation_id)
        if all(len(ops) >= 2 for ops in by_owner.values()):
            break
    victim, survivor = sorted(pids, key=lambda p: len(by_owner[p]))
    assert len(by_owner[victim]) >= 2

    os.kill(victim, signal.SIGKILL)

    async def reported() -> bool:
        return f"(pid {victim}) was killed by SIGKILL" in served.log.read_text()

    await _poll(reported)
    # The survivor keeps serving: every fresh connection is answered, installs included.
    for i in range(10):
        async with grpc.aio.insecure_channel(served.address) as chan:
            stub = Stub(chan)
            if i == 0:
                await create_skill(stub, "after")
            await stub.GetSkillDefinition(
                skill_service_pb2.GetSkillDefinitionRequest(skill_id="held-0")
            )
            op = await install(stub, "after", skill_archive("after", f"2.0.{i}"))
            assert (await events(stub, op.operation_id))[-1].state == (
                resources_pb2.OPERATION_STATE_SUCCEEDED
            )

    async with grpc.aio.insecure_channel(served.address) as chan:
        stub = Stub(chan)

        async def reaped(operation_id: str) -> resources_pb2.Operation | None:
            op = await stub.GetOperation(
                skill_service_pb2.GetOperationRequest(operation_id=operation_id)
            )
            return op if op.state == resources_pb2.OPERATION_STATE_FAILED else None

        # The victim's operations are failed as interrupted by its siblings' recovery.
        for operation_id in by_owner[victim]:
            failed = await _poll(lambda operation_id=operation_id: reaped(operation_id))
            assert failed.error.code == grpc.StatusCode.ABORTED.value[0]
            assert "interrupted" in failed.error.message
        # ... and stay retryable; the survivor's own installs were never touched.
        retried = await stub.Retry(skill_service_pb2.RetryRequest(operation_id=by_owner[victim][0]))
        assert retried.attempt == 2
        assert retried.retry_of == by_owner[victim][0]
        archive_server.gate.set()
        for operation_id in [retried.operation_id, *by_owner[survivor]]:
            assert (await events(stub, operation_id))[-1].state == (
                resources_pb2.OPERATION_STATE_SUCCEEDED
            )

    # The supervisor replaced the victim: a new worker with its own heartbeat row.
    replaced = await _workers(served, db_url, 2)
    assert survivor in replaced
    assert victim not in replaced
    assert "restarting it in" in served.log.read_text()
    assert await served.terminate() == 0


async def test_sigterm_gives_each_worker_its_grace_period(  # type: ignore[no-untyped-def]
    serve, db_url: str, archive_server: ArchiveServer
) -> None:
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_WORKERS="2",
        SKILLSVC_URL_ALLOW_PRIVATE="true",
        SKILLSVC_SHUTDOWN_GRACE_SECONDS="30",
    )
    await served.wait_serving()
    pids = await _workers(served, db_url, 2)
    archive_server.gate.clear()
    # An install held half-way on each worker (fresh connections until both have one).
    by_owner: dict[int, str] = {}
    for i in range(40):
        skill = f"graceful-{i}"
        archive_server.files[f"/{skill}.tgz"] = skill_archive(skill, "1.0.0")
        async with grpc.aio.insecure_channel(served.address) as chan:
            stub = Stub(chan)
            await create_skill(stub, skill)
            op = await install_url(stub, skill, archive_server.url(f"/{skill}.tgz"))
        by_owner.setdefault(await _owner_pid(db_url, op.operation_id), op.operation_id)
        if set(by_owner) == pids:
            break
    assert set(by_owner) == pids

    served.proc.send_signal(signal.SIGTERM)

    async def both_stopping() -> bool:
        text = served.log.read_text()
        return all(f"[worker {n}]: shutting down" in text for n in (0, 1))

    await _poll(both_stopping)
    assert served.proc.returncode is None, "the supervisor waits for its workers"
    archive_server.gate.set()
    try:
        async with asyncio.timeout(60):
            code = await served.proc.wait()
    except TimeoutError:
        raise AssertionError(f"still running; its log:\n{served.log.read_text()[-8000:]}") from None
    assert code == 0, served.log.read_text()[-8000:]
    conn = await asyncpg.connect(db_url)
    try:
        states = {
            row["state"]
            for row in await conn.fetch(
                "SELECT state FROM skill_install_logs WHERE operation_id = ANY($1::uuid[])",
                list(by_owner.values()),
            )
        }
    finally:
        await conn.close()
    assert states == {"SUCCEEDED"}


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


async def test_one_metrics_endpoint_adds_up_every_worker(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_WORKERS="2",
        SKILLSVC_METRICS_ADDR=f"127.0.0.1:{port}",
    )
    await served.wait_serving()
    pids = await _workers(served, db_url, 2)
    owners: dict[int, int] = {}
    for i in range(40):
        async with grpc.aio.insecure_channel(served.address) as chan:
            stub = Stub(chan)
            if i == 0:
                await create_skill(stub, "metered")
            op = await install(stub, "metered", skill_archive("metered", f"1.0.{i}"))
            assert (await events(stub, op.operation_id))[-1].state == (
                resources_pb2.OPERATION_STATE_SUCCEEDED
            )
        owner = await _owner_pid(db_url, op.operation_id)
        owners[owner] = owners.get(owner, 0) + 1
        if set(owners) == pids and sum(owners.values()) >= 4:
            break
    assert set(owners) == pids, "both workers must have installed something"
    total = sum(owners.values())

    async def counted() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        samples = await asyncio.to_thread(_scrape, port)
        installs = sum(value for _, value in samples.get("skill_install_total", []))
        return samples if installs == total else None

    # The counter is the sum of both workers' (each counted only its own installs).
    samples = await _poll(counted, timeout=30)
    # Gauges are combined too (one series, not one per worker pid).
    for gauge in ("skill_storage_bytes", "skill_store_free_bytes", "skill_store_total_bytes"):
        assert len(samples[gauge]) == 1, gauge
        assert samples[gauge][0][1] > 0, gauge
    # The standard per-RPC series add up the same way, every method there from the start.
    handled = {
        (labels["grpc_method"], labels["grpc_code"]): value
        for labels, value in samples["grpc_server_handled_total"]
    }
    assert handled[("Install", "OK")] == total
    # Never called, pre-initialised by both workers: one series, at zero.
    rollbacks = [
        v
        for labels, v in samples["grpc_server_handled_total"]
        if labels["grpc_method"] == "Rollback"
    ]
    assert rollbacks == [0.0]
    # Each worker's pool counts once: SKILLSVC_DB_POOL_SIZE (10) per worker.
    assert samples["skillsvc_db_pool_max"] == [({}, 20.0)]
    assert samples["skill_installs_running"] == [({}, 0.0)]
    assert await served.terminate() == 0


async def test_a_worker_that_keeps_dying_is_restarted_ever_later(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    served = await serve(SKILLSVC_DATABASE_URL=db_url, SKILLSVC_WORKERS="2")
    await served.wait_serving()
    pids = await _workers(served, db_url, 2)
    victim = min(pids)
    # The same worker dies twice in a row: the second restart waits twice as long.
    for restart, delay in ((1, "0.5"), (2, "1.0")):
        os.kill(victim, signal.SIGKILL)

        async def gone(victim: int = victim) -> bool:
            return not _alive(victim)  # SIGKILL is delivered asynchronously

        await _poll(gone)
        replaced = await _workers(served, db_url, 2)
        assert victim not in replaced
        assert (
            f"(pid {victim}) was killed by SIGKILL; restarting it in {delay}s (restart {restart})"
            in served.log.read_text()
        )
        (victim,) = replaced - pids
        pids = replaced
    assert await served.terminate() == 0


@pytest.mark.parametrize(
    ("taken_by", "reuse_port", "words"),
    [
        ("SKILLSVC_LISTEN_ADDR", False, "cannot listen on"),
        # gRPC servers set SO_REUSEPORT by default: the supervisor must not join them.
        ("SKILLSVC_LISTEN_ADDR", True, "cannot listen on"),
        ("SKILLSVC_METRICS_ADDR", False, "cannot listen on"),
    ],
    ids=["grpc", "grpc-reuseport", "metrics"],
)
def test_a_port_taken_by_another_program_stops_serve_with_exit_2(
    tmp_path: Path, taken_by: str, reuse_port: bool, words: str
) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {
            "SKILLSVC_WORKERS": "2",
            "SKILLSVC_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
            "SKILLSVC_DATA_DIR": str(tmp_path / "data"),
            "SKILLSVC_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            taken_by: address,
        }
        result = subprocess.run(
            [sys.executable, "-m", "skillsvc.cli", "serve"],
            env=child_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"{words} {address}" in result.stderr
    # Refused before anything started: no embedded PostgreSQL was initialised.
    assert not (tmp_path / "data" / "postgres").exists()


def test_a_key_file_a_worker_cannot_read_stops_serve_with_exit_2(
    tmp_path: Path, db_url: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skillsvc.cli", "serve"],
        env=child_env(
            SKILLSVC_WORKERS="2",
            SKILLSVC_DATABASE_URL=db_url,
            SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
            SKILLSVC_METRICS_ADDR="",
            SKILLSVC_AUTH="jwt",
            SKILLSVC_JWT_JWKS_FILE=str(tmp_path / "missing.json"),
            SKILLSVC_DATA_DIR=str(tmp_path / "data"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Like a single process: one line naming the variable, exit 2, nothing started.
    assert result.returncode == 2, result.stderr
    assert "configuration error: SKILLSVC_JWT_JWKS_FILE: cannot read" in result.stderr
    assert "[worker" not in result.stderr
    assert not (tmp_path / "data").exists()


async def test_sighup_rotates_the_keys_of_every_worker(serve, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old_secret, new_secret = "old-secret-" + "a" * 32, "new-secret-" + "b" * 32
    secrets_file = tmp_path / "jwt-secrets"
    secrets_file.write_text(f"{old_secret}\n")
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_WORKERS="2",
        SKILLSVC_AUTH="jwt",
        SKILLSVC_JWT_SECRETS_FILE=str(secrets_file),
    )
    await served.wait_serving()
    pids = await _workers(served, db_url, 2)

    def token(secret: str) -> str:
        now = int(time.time())
        claims = {"sub": "rotator", "tenant": "", "roles": ["reader"], "iat": now}
        return jwt.encode({**claims, "exp": now + 600}, secret, "HS256")

    async def accepted(secret: str) -> list[grpc.StatusCode]:
        """One call per fresh connection (so both workers answer some) with a token."""
        seen = []
        for _ in range(12):
            async with grpc.aio.insecure_channel(served.address) as chan:
                try:
                    await Stub(chan).ListSkillDefinitions(
                        skill_service_pb2.ListSkillDefinitionsRequest(),
                        metadata=(("authorization", f"Bearer {token(secret)}"),),
                    )
                except grpc.aio.AioRpcError as exc:
                    seen.append(exc.code())
                else:
                    seen.append(grpc.StatusCode.OK)
        return seen

    ok, refused = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED
    assert set(await accepted(old_secret)) == {ok}
    assert set(await accepted(new_secret)) == {refused}
    secrets_file.write_text(f"{new_secret}\n")
    served.proc.send_signal(signal.SIGHUP)

    async def both_reloaded() -> bool:
        lines = served.log.read_text().splitlines()
        return all(
            any(f"[worker {n}]" in line and "JWT keys reloaded" in line for line in lines)
            for n in (0, 1)
        )

    await _poll(both_reloaded)
    assert set(await accepted(new_secret)) == {ok}
    assert set(await accepted(old_secret)) == {refused}
    # Reloaded in place: the same workers, no restart.
    assert await _workers(served, db_url, 2) == pids
    assert await served.terminate() == 0


async def test_sigterm_before_any_worker_started_is_a_clean_stop(
    serve: Callable[..., Awaitable[Served]], embedded_data_dir: Path
) -> None:
    # The supervisor installs its signal handlers, then initialises and starts the
    # embedded PostgreSQL (seconds on a first run): a SIGTERM then stops it cleanly.
    served = await serve(SKILLSVC_WORKERS="2", SKILLSVC_DATA_DIR=str(embedded_data_dir))
    pgdata = embedded_data_dir / "postgres"

    async def initialising() -> bool:
        return pgdata.exists()

    await _poll(initialising)
    served.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(60):
        code = await served.proc.wait()
    log = served.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log
    assert "serving on" not in log
