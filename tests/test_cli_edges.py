"""The ``skillsvc`` command at its edges: start-up failures and refusals as an operator
meets them. Real processes, real sockets, real databases; no tracebacks."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.processes import child_env, free_port


@dataclass(frozen=True)
class Ran:
    """A finished ``skillsvc`` command."""

    code: int
    out: str
    err: str


async def skillsvc(*args: str, **env: str) -> Ran:
    """Run ``skillsvc ARGS`` with exactly the given SKILLSVC_* settings."""
    env.setdefault("SKILLSVC_METRICS_ADDR", "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skillsvc.cli",
        *args,
        env=child_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def assert_one_line_exit_2(ran: Ran, *needles: str) -> None:
    assert ran.code == 2, ran
    assert "Traceback" not in ran.err, ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    for needle in needles:
        assert needle in lines[0], lines[0]


# One process, and the supervisor of worker processes (the default on several CPUs).
WORKERS = pytest.mark.parametrize("workers", ["1", "2"], ids=["single", "supervisor"])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on (no SO_REUSEPORT)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@WORKERS
async def test_serve_on_a_port_in_use_is_one_line_and_exit_2(
    workers: str, taken_port: int, db_url: str, tmp_path: Path
) -> None:
    ran = await skillsvc(
        "serve",
        SKILLSVC_WORKERS=workers,
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_DATA_DIR=str(tmp_path / "data"),
        SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{taken_port}",
    )
    assert_one_line_exit_2(ran, f"127.0.0.1:{taken_port}", "SKILLSVC_LISTEN_ADDR", "in use")


@WORKERS
async def test_second_serve_on_the_same_port_refuses_instead_of_sharing_it(
    workers: str, serve, db_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # gRPC binds with SO_REUSEPORT: without the check a second server would silently
    # take half of the first one's connections.
    first = await serve(SKILLSVC_DATABASE_URL=db_url, SKILLSVC_WORKERS="1")
    await first.wait_serving()
    ran = await skillsvc(
        "serve",
        SKILLSVC_WORKERS=workers,
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_DATA_DIR=str(tmp_path / "second"),
        SKILLSVC_LISTEN_ADDR=first.address,
    )
    assert_one_line_exit_2(ran, first.address, "in use")
    await first.wait_serving()
    assert await first.terminate() == 0


@WORKERS
async def test_serve_with_the_metrics_port_in_use_is_one_line_and_exit_2(
    workers: str, taken_port: int, db_url: str, tmp_path: Path
) -> None:
    ran = await skillsvc(
        "serve",
        SKILLSVC_WORKERS=workers,
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_DATA_DIR=str(tmp_path / "data"),
        SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        SKILLSVC_METRICS_ADDR=f"127.0.0.1:{taken_port}",
    )
    assert_one_line_exit_2(ran, "SKILLSVC_METRICS_ADDR", "in use")


@WORKERS
async def test_serve_with_an_unreachable_database_is_one_line_without_the_password(
    workers: str,
    tmp_path: Path,
) -> None:
    url = f"postgresql://skillsvc:hunter2secret@127.0.0.1:{free_port()}/skills"
    ran = await skillsvc(
        "serve",
        SKILLSVC_WORKERS=workers,
        SKILLSVC_DATABASE_URL=url,
        SKILLSVC_DATA_DIR=str(tmp_path / "data"),
        SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
    )
    assert_one_line_exit_2(ran, "cannot connect to PostgreSQL", "skillsvc:***@127.0.0.1")
    assert "hunter2secret" not in ran.err


@WORKERS
async def test_serve_refused_by_the_database_is_one_line_and_exit_2(
    workers: str, pg_server_url: str, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    missing = urlunsplit(urlsplit(pg_server_url)._replace(path="/skillsvc_no_such_database"))
    ran = await skillsvc(
        "serve",
        SKILLSVC_WORKERS=workers,
        SKILLSVC_DATABASE_URL=missing,
        SKILLSVC_DATA_DIR=str(tmp_path / "data"),
        SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
    )
    assert_one_line_exit_2(ran, "skillsvc_no_such_database", "does not exist")


async def test_serve_with_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    ran = await skillsvc(
        "serve", SKILLSVC_DATA_DIR=str(tmp_path / "data"), SKILLSVC_MAX_FILES="lots"
    )
    assert_one_line_exit_2(ran, "SKILLSVC_MAX_FILES")
    assert not (tmp_path / "data").exists()


@WORKERS
async def test_serve_with_a_data_dir_it_cannot_create_is_one_line_and_exit_2(
    workers: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    ran = await skillsvc(
        "serve",
        SKILLSVC_WORKERS=workers,
        SKILLSVC_DATA_DIR=str(tmp_path / "a-file" / "data"),
        SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
    )
    assert_one_line_exit_2(ran, str(tmp_path / "a-file" / "data"), "Not a directory")


async def test_history_of_an_unknown_skill_exits_non_zero(db_url: str, tmp_path: Path) -> None:
    env = {"SKILLSVC_DATABASE_URL": db_url, "SKILLSVC_DATA_DIR": str(tmp_path / "data")}
    ran = await skillsvc("history", "no-such-skill", **env)
    assert ran.code == 1, ran
    assert "no skill 'no-such-skill'" in ran.err
    assert "Traceback" not in ran.err
    assert ran.out == ""


async def test_operator_command_beside_serve_leaves_its_embedded_postgres_alone(
    serve, embedded_data_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    data = embedded_data_dir
    served = await serve(SKILLSVC_DATA_DIR=str(data))
    await served.wait_serving()
    ran = await skillsvc("status", SKILLSVC_DATA_DIR=str(data))
    assert ran.code == 0, ran
    assert "embedded PostgreSQL stopped" not in ran.err
    assert (data / "postgres" / "postmaster.pid").exists()
    await served.wait_serving()
    assert await served.terminate() == 0
    # Alone, the command starts the embedded server itself, and stops it (and says so).
    ran = await skillsvc("status", SKILLSVC_DATA_DIR=str(data))
    assert ran.code == 0, ran
    assert "embedded PostgreSQL stopped" in ran.err
    assert not (data / "postgres" / "postmaster.pid").exists()


async def _tables(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
    finally:
        await conn.close()
    return [r["tablename"] for r in rows]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def test_refused_restore_leaves_database_and_store_as_they_were(
    db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    made = await skillsvc(
        "backup",
        str(backup),
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_DATA_DIR=str(tmp_path / "source"),
    )
    assert made.code == 0, made
    # Not a backup: refused before anything, no schema, no store directories.
    target = tmp_path / "target"
    env = {"SKILLSVC_DATABASE_URL": empty_db_url, "SKILLSVC_DATA_DIR": str(target)}
    ran = await skillsvc("restore", str(tmp_path), **env)
    assert ran.code == 1, ran
    assert "not a skillsvc backup" in ran.err
    assert await _tables(empty_db_url) == []
    assert not (target / "store").exists()
    # A real backup into a store that holds something: refused, nothing changed.
    stray = target / "store" / "blobs" / "sha256" / ("0" * 64)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"someone else's archive")
    before = _tree(target)
    ran = await skillsvc("restore", str(backup), **env)
    assert ran.code == 1, ran
    assert "not empty" in ran.err
    assert "Traceback" not in ran.err
    assert await _tables(empty_db_url) == []
    assert _tree(target) == before
    # Once the store is empty the same restore goes through.
    stray.unlink()
    ran = await skillsvc("restore", str(backup), **env)
    assert ran.code == 0, ran
    assert "skill_definitions" in await _tables(empty_db_url)
