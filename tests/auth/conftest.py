"""Fixtures of the security tests: tokens, and one JWT-protected server per module.

The ``world`` fixture starts the production server with ``SKILLSVC_AUTH=jwt`` once per
test module (database from the migrated template, like every other test) and fills it,
as an admin, with one installed skill per kind of target:

- ``own``: ``acme-private``, private to tenant ``acme`` (the tenant of the callers);
- ``other``: ``globex-private``, private to tenant ``globex``;
- ``other-public``: ``globex-public``, owned by ``globex`` but public;
- ``platform``: ``platform-skill``, a platform definition (public by default).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import jwt
import pytest

from skillsvc.config import Settings
from skillsvc.server import App, build_server
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.packages import skill_archive

Stub = skill_service_pb2_grpc.SkillServiceStub
Metadata = tuple[tuple[str, str], ...]

SECRET = "skillsvc-test-secret-" + "0123456789abcdef" * 2
"""The HS256 secret of the test servers (at least 32 bytes)."""

TARGETS: dict[str, tuple[str, str, bool | None]] = {
    # target: (skill id, owning tenant, public)
    "own": ("acme-private", "acme", None),
    "other": ("globex-private", "globex", None),
    "other-public": ("globex-public", "globex", True),
    "platform": ("platform-skill", "", None),
}
VERSION = "1.0.0"


def mint(
    sub: str | None = "alice@acme",
    tenant: str | None = "acme",
    roles: Iterable[str] | None = ("publisher",),
    *,
    ttl: int = 3600,
    secret: str | bytes = SECRET,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    """A token; a claim given as None is left out."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant": tenant,
        "roles": None if roles is None else list(roles),
        "iat": now,
        "exp": now + ttl,
        **extra,
    }
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm)


def bearer(token: str) -> Metadata:
    """Call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


ADMIN = bearer(mint("root", "", ["admin"]))
PUBLISHER = bearer(mint("alice@acme", "acme", ["publisher"]))
READER = bearer(mint("bob@acme", "acme", ["reader"]))
OTHER_PUBLISHER = bearer(mint("carol@globex", "globex", ["publisher"]))
OTHER_READER = bearer(mint("dave@globex", "globex", ["reader"]))


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def upload_messages(
    spec: skill_service_pb2.InstallSpec, data: bytes, *, hang: asyncio.Event | None = None
) -> AsyncIterator[skill_service_pb2.InstallRequest]:
    """The Install/Validate stream; with ``hang`` it stalls after the first chunk."""
    yield skill_service_pb2.InstallRequest(spec=spec)
    yield skill_service_pb2.InstallRequest(chunk=data[:1024])
    if hang is not None:
        await hang.wait()
    if data[1024:]:
        yield skill_service_pb2.InstallRequest(chunk=data[1024:])


def upload_spec(skill_id: str, data: bytes, **fields: Any) -> skill_service_pb2.InstallSpec:
    return skill_service_pb2.InstallSpec(
        skill_id=skill_id, upload=skill_service_pb2.UploadSource(size_bytes=len(data)), **fields
    )


async def install(
    stub: Stub, skill_id: str, data: bytes, metadata: Metadata, **fields: Any
) -> resources_pb2.Operation:
    """Upload ``data`` as a package of ``skill_id``; the accepted operation."""
    return await stub.Install(
        upload_messages(upload_spec(skill_id, data, **fields), data), metadata=metadata
    )


async def finish(stub: Stub, operation_id: str, metadata: Metadata) -> resources_pb2.Operation:
    """Follow the operation to its end; its final state."""
    call = stub.InstallProgress(
        skill_service_pb2.InstallProgressRequest(operation_id=operation_id), metadata=metadata
    )
    async for _ in call:
        pass
    return await stub.GetOperation(
        skill_service_pb2.GetOperationRequest(operation_id=operation_id), metadata=metadata
    )


async def create(stub: Stub, skill_id: str, metadata: Metadata, **fields: Any) -> Any:
    return await stub.CreateSkillDefinition(
        skill_service_pb2.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id, **fields)
        ),
        metadata=metadata,
    )


@dataclass
class World:
    """A JWT-protected server with one installed skill per target kind."""

    app: App
    stub: Stub
    db_url: str
    skills: dict[str, str]
    """target → skill id."""
    operations: dict[str, str]
    """target → the id of the install operation of its 1.0.0."""
    archives: dict[str, bytes]
    """target → the archive installed as 1.0.0."""


@pytest.fixture(scope="module")
async def module_db_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    """A migrated database shared by the tests of one module."""
    name = f"skillsvc_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield _with_database(pg_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def jwt_settings(db_url: str, data_dir: Path, **changes: Any) -> Settings:
    """Settings of a loopback test server that requires HS256 tokens."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "data_dir": data_dir,
        "listen_addr": "127.0.0.1:0",
        "metrics_addr": "",
        "health_interval_seconds": 0.2,
        "shutdown_grace_seconds": 1.0,
        "auth": "jwt",
        "jwt_secret": SECRET,
    }
    values.update(changes)
    return Settings.from_env({}, **values)


@pytest.fixture(scope="module")
async def world(
    module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """One started JWT server per module, seeded by an admin."""
    app = await build_server(jwt_settings(module_db_url, tmp_path_factory.mktemp("auth") / "data"))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = skill_service_pb2_grpc.SkillServiceStub(channel)
            skills, operations, archives = {}, {}, {}
            for target, (skill_id, tenant, public) in TARGETS.items():
                fields: dict[str, Any] = {"tenant": tenant, "description": f"{target} skill"}
                if public is not None:
                    fields["public"] = public
                await create(stub, skill_id, ADMIN, **fields)
                data = skill_archive(skill_id, VERSION)
                op = await install(stub, skill_id, data, ADMIN, version=VERSION)
                final = await finish(stub, op.operation_id, ADMIN)
                assert final.state == resources_pb2.OPERATION_STATE_SUCCEEDED, final.error
                skills[target], operations[target], archives[target] = (
                    skill_id,
                    op.operation_id,
                    data,
                )
            yield World(app, stub, module_db_url, skills, operations, archives)
    finally:
        await app.stop(0)
