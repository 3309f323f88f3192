"""Helpers for install tests: upload an archive, follow its progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

Stub = skill_service_pb2_grpc.SkillServiceStub


async def upload_messages(
    spec: skill_service_pb2.InstallSpec, data: bytes, chunk: int = 64 * 1024
) -> AsyncIterator[skill_service_pb2.InstallRequest]:
    yield skill_service_pb2.InstallRequest(spec=spec)
    for start in range(0, len(data), chunk):
        yield skill_service_pb2.InstallRequest(chunk=data[start : start + chunk])


def upload_spec(skill_id: str, data: bytes, **fields: object) -> skill_service_pb2.InstallSpec:
    return skill_service_pb2.InstallSpec(
        skill_id=skill_id,
        upload=skill_service_pb2.UploadSource(size_bytes=len(data)),
        **fields,  # type: ignore[arg-type]
    )


async def install(
    stub: Stub, skill_id: str, data: bytes, **fields: object
) -> resources_pb2.Operation:
    """Upload ``data`` as a package of ``skill_id``; returns the accepted operation."""
    return await stub.Install(upload_messages(upload_spec(skill_id, data, **fields), data))


async def events(stub: Stub, operation_id: str) -> list[resources_pb2.InstallEvent]:
    """Every InstallProgress event until the stream ends."""
    call = stub.InstallProgress(skill_service_pb2.InstallProgressRequest(operation_id=operation_id))
    return [event async for event in call]


async def install_and_wait(
    stub: Stub, skill_id: str, data: bytes, **fields: object
) -> tuple[resources_pb2.Operation, list[resources_pb2.InstallEvent]]:
    op = await install(stub, skill_id, data, **fields)
    seen = await events(stub, op.operation_id)
    final = await stub.GetOperation(
        skill_service_pb2.GetOperationRequest(operation_id=op.operation_id)
    )
    return final, seen


async def create_skill(stub: Stub, skill_id: str, **fields: object) -> None:
    await stub.CreateSkillDefinition(
        skill_service_pb2.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id, **fields)  # type: ignore[arg-type]
        )
    )


@pytest.fixture
async def skill(stub: Stub) -> str:
    """A platform skill definition named ``pdf-tools``."""
    await create_skill(stub, "pdf-tools")
    return "pdf-tools"


class ArchiveServer:
    """A loopback HTTP server for URL installs whose responses the test controls."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.requests: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ")[1].decode()
            self.requests.append(path)
            body = self.files.get(path)
            if body is None:
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            half = len(body) // 2
            writer.write(body[:half])
            await writer.drain()
            await self.gate.wait()  # tests hold downloads here
            writer.write(body[half:])
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.gate.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def archive_server() -> AsyncIterator[ArchiveServer]:
    server = ArchiveServer()
    await server.start()
    yield server
    await server.stop()


async def install_url(
    stub: Stub, skill_id: str, url: str, **fields: object
) -> resources_pb2.Operation:
    async def messages() -> AsyncIterator[skill_service_pb2.InstallRequest]:
        yield skill_service_pb2.InstallRequest(
            spec=skill_service_pb2.InstallSpec(skill_id=skill_id, url=url, **fields)  # type: ignore[arg-type]
        )

    return await stub.Install(messages())


async def wait_for_stage(stub: Stub, operation_id: str, stage: int) -> None:
    """Follow the operation until it reaches ``stage``."""
    call = stub.InstallProgress(skill_service_pb2.InstallProgressRequest(operation_id=operation_id))
    async for event in call:
        if event.stage == stage:
            call.cancel()
            return
    raise AssertionError(f"operation ended without reaching stage {stage}")
