"""Shared fixtures: one PostgreSQL per run, a fresh database per test, a real server.

PostgreSQL is ``SKILLSVC_TEST_DATABASE_URL`` when set (any database on the server;
it is used to create and drop others), else one embedded server for the whole run.
Each test that needs a database gets ``CREATE DATABASE ... TEMPLATE`` of a database
migrated once per run, which costs tens of milliseconds instead of a migration.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from skillsvc.config import Settings
from skillsvc.db import EmbeddedPostgres, migrate
from skillsvc.server import App, build_server
from skillsvc.v1 import skill_service_pb2_grpc
from tests.processes import embedded_data_dir, serve
from tests.s3 import SeaweedS3, running_seaweed

__all__ = ["embedded_data_dir", "serve"]  # fixtures for every test module


def _with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps host, socket and credentials)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
async def pg_server_url() -> AsyncIterator[str]:
    """A URL of the PostgreSQL server tests use (maintenance database)."""
    url = os.environ.get("SKILLSVC_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: pytest resets that tree to mode 0700 whenever another
    # pytest run starts, which locks out the server's own (non-root) user.
    base = Path(tempfile.mkdtemp(prefix="skillsvc-test-pg-"))
    embedded = await EmbeddedPostgres.start(base / "data")
    try:
        yield embedded.url
    finally:
        await embedded.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_db(pg_server_url: str) -> AsyncIterator[str]:
    """Name of a database migrated once for this run."""
    name = f"skillsvc_tmpl_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(_with_database(pg_server_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def empty_db_url(pg_server_url: str) -> AsyncIterator[str]:
    """URL of a brand-new empty database, dropped after the test."""
    name = f"skillsvc_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(pg_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh, migrated database for this test only."""
    name = f"skillsvc_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield _with_database(pg_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, to assert on rows."""
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings of a server on an ephemeral loopback port with its own data dir."""
    return Settings.from_env(
        {},
        database_url=db_url,
        data_dir=tmp_path / "data",
        listen_addr="127.0.0.1:0",
        metrics_addr="",
        health_interval_seconds=0.2,
        shutdown_grace_seconds=1.0,
        # Threads: a spawned archive process costs every test's start-up a few tenths
        # of a second. tests/install/test_archive_work.py and every test that runs
        # `skillsvc serve` cover the processes (the default).
        archive_processes=0,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    """The production server, built by the composition root and started."""
    server = await build_server(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    """A real channel to the server."""
    async with grpc.aio.insecure_channel(app.address) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> skill_service_pb2_grpc.SkillServiceStub:
    """A SkillService client stub."""
    return skill_service_pb2_grpc.SkillServiceStub(channel)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) for the whole session; see tests/s3.py."""
    with running_seaweed() as server:
        yield server


@pytest.fixture
def s3_bucket(seaweed: SeaweedS3) -> str:
    """A new, empty bucket of this test's own: ``s3://<bucket>/skills``."""
    return seaweed.new_bucket()


@pytest.fixture
def repo_root() -> Path:
    """The checkout's root."""
    return Path(__file__).resolve().parent.parent


@pytest.fixture
async def make_app(settings: Settings) -> AsyncIterator[Any]:
    """Build and start extra servers with settings changed from the default ones."""
    started: list[App] = []

    async def make(**changes: Any) -> App:
        server = await build_server(dataclasses.replace(settings, **changes))
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop(0)
