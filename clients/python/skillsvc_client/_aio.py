"""The asyncio client: :class:`AsyncClient`."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from skillsvc_client import _common
from skillsvc_client._common import Connection, Prepared, Source
from skillsvc_client._errors import InstallFailed, from_rpc_error
from skillsvc_client._files import write_verified
from skillsvc_client.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

T = TypeVar("T")


class AsyncClient:
    """A skillsvc client for asyncio code.

    Use it as an async context manager (or call :meth:`close`)::

        async with AsyncClient(Connection("127.0.0.1:50051")) as client:
            install = client.install("./pdf-tools")
            async for event in install:
                print(event.stage, event.bytes_done)
            operation = await install.wait()
    """

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection or Connection()
        """How this client reaches the server."""
        conn = self.connection
        if conn.secure:
            self._channel = grpc.aio.secure_channel(
                conn.address, conn.credentials(), conn.channel_options()
            )
        else:
            self._channel = grpc.aio.insecure_channel(conn.address, conn.channel_options())
        self._stub = skill_service_pb2_grpc.SkillServiceStub(self._channel)
        self._metadata = conn.metadata()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def _call(self, attempt: Callable[[], Awaitable[T]], *, idempotent: bool = True) -> T:
        """Run ``attempt``, retrying on ``UNAVAILABLE`` when safe; map errors."""
        delays = self.connection.retry.delays() if idempotent else iter(())
        while True:
            try:
                return await attempt()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    delay = next(delays, None)
                    if delay is not None:
                        await asyncio.sleep(delay)
                        continue
                raise from_rpc_error(exc) from None

    def _unary(self, name: str, request: Any, *, idempotent: bool = True) -> Awaitable[Any]:
        method = getattr(self._stub, name)
        timeout = self.connection.timeout
        return self._call(
            lambda: method(request, timeout=timeout, metadata=self._metadata),
            idempotent=idempotent,
        )

    # -- definitions ---------------------------------------------------------------

    async def create(
        self,
        skill_id: str,
        *,
        display_name: str = "",
        description: str = "",
        tenant: str = "",
        public: bool | None = None,
        active: bool | None = None,
    ) -> resources_pb2.SkillDefinition:
        """Create a skill definition; ``AlreadyExists`` if the id is taken."""
        definition = resources_pb2.SkillDefinition(
            skill_id=skill_id, display_name=display_name, description=description, tenant=tenant
        )
        if public is not None:
            definition.public = public
        if active is not None:
            definition.active = active
        request = skill_service_pb2.CreateSkillDefinitionRequest(definition=definition)
        result: resources_pb2.SkillDefinition = await self._unary(
            "CreateSkillDefinition", request, idempotent=False
        )
        return result

    async def get(self, skill_id: str) -> resources_pb2.SkillDefinition:
        """A skill definition; ``NotFound`` if it does not exist or is not visible."""
        result: resources_pb2.SkillDefinition = await self._unary(
            "GetSkillDefinition", skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill_id)
        )
        return result

    async def list(
        self, *, include_inactive: bool = False
    ) -> builtins.list[resources_pb2.SkillDefinition]:
        """Every definition the caller can see, across all pages."""
        return await self._all_pages(
            "ListSkillDefinitions",
            lambda token: skill_service_pb2.ListSkillDefinitionsRequest(
                page_size=_common.PAGE_SIZE, page_token=token, include_inactive=include_inactive
            ),
            "definitions",
        )

    async def update(
        self,
        skill_id: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        active: bool | None = None,
        public: bool | None = None,
    ) -> resources_pb2.SkillDefinition:
        """Change the given fields of a definition (the others stay)."""
        request = _common.definition_update(
            skill_id,
            display_name=display_name,
            description=description,
            active=active,
            public=public,
        )
        result: resources_pb2.SkillDefinition = await self._unary("UpdateSkillDefinition", request)
        return result

    async def delete(self, skill_id: str, *, force: bool = False) -> None:
        """Delete a definition; ``force`` also removes its packages and files."""
        await self._unary(
            "DeleteSkillDefinition",
            skill_service_pb2.DeleteSkillDefinitionRequest(skill_id=skill_id, force=force),
            idempotent=False,
        )

    async def _all_pages(
        self, method: str, request: Callable[[str], Any], field: str
    ) -> builtins.list[Any]:
        """Every item of a paged List RPC: ``request(token)`` builds each page's request."""
        found: builtins.list[Any] = []
        token = ""
        while True:
            page = await self._unary(method, request(token))
            found += getattr(page, field)
            token = page.next_page_token
            if not token:
                return found

    # -- packages and operations ---------------------------------------------------

    async def versions(self, skill_id: str) -> builtins.list[resources_pb2.SkillPackage]:
        """Every package (version) of a skill, newest first, across all pages."""
        return await self._all_pages(
            "ListPackages",
            lambda token: skill_service_pb2.ListPackagesRequest(
                skill_id=skill_id, page_size=_common.PAGE_SIZE, page_token=token
            ),
            "packages",
        )

    async def package(self, skill_id: str, version: str = "") -> resources_pb2.SkillPackage:
        """One package; the current one when ``version`` is empty."""
        result: resources_pb2.SkillPackage = await self._unary(
            "GetPackage", skill_service_pb2.GetPackageRequest(skill_id=skill_id, version=version)
        )
        return result

    async def history(self, skill_id: str) -> builtins.list[resources_pb2.Operation]:
        """Every operation on a skill (the install log), newest first, across all pages."""
        return await self._all_pages(
            "ListOperations",
            lambda token: skill_service_pb2.ListOperationsRequest(
                skill_id=skill_id, page_size=_common.PAGE_SIZE, page_token=token
            ),
            "operations",
        )

    async def operation(self, operation_id: str) -> resources_pb2.Operation:
        """One operation by id."""
        result: resources_pb2.Operation = await self._unary(
            "GetOperation", skill_service_pb2.GetOperationRequest(operation_id=operation_id)
        )
        return result

    async def rollback(
        self, skill_id: str, *, to: str = "", reason: str = ""
    ) -> resources_pb2.Operation:
        """Make ``to`` (default: the last known-good version) current again."""
        result: resources_pb2.Operation = await self._unary(
            "Rollback",
            skill_service_pb2.RollbackRequest(skill_id=skill_id, target_version=to, reason=reason),
            idempotent=False,
        )
        return result

    async def retry(self, operation_id: str) -> resources_pb2.Operation:
        """Start a new attempt of a failed install; follow it with :meth:`watch`/:meth:`wait`."""
        result: resources_pb2.Operation = await self._unary(
            "Retry", skill_service_pb2.RetryRequest(operation_id=operation_id), idempotent=False
        )
        return result

    async def watch(self, operation_id: str) -> AsyncIterator[resources_pb2.InstallEvent]:
        """An operation's progress events, ending after the terminal one.

        A stream cut by ``UNAVAILABLE`` is reopened (the server starts again with the
        current state, so an event may repeat).
        """
        delays = self.connection.retry.delays()
        request = skill_service_pb2.InstallProgressRequest(operation_id=operation_id)
        finished = False
        while True:
            try:
                call = self._stub.InstallProgress(
                    request, timeout=self.connection.transfer_timeout, metadata=self._metadata
                )
                # The server ends the stream after the terminal event; reading to the
                # end (rather than hanging up) lets the call finish cleanly on both sides.
                async for event in call:
                    finished = finished or _common.is_terminal(event)
                    yield event
                return
            except grpc.aio.AioRpcError as exc:
                delay = next(delays, None)
                if finished:
                    return
                if exc.code() != grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(delay)

    async def watch_skills(
        self, skill_ids: Iterable[str] = (), since: int | None = None
    ) -> AsyncIterator[resources_pb2.SkillEvent]:
        """Changes of skills (every visible one when ``skill_ids`` is empty), forever.

        As :meth:`Client.watch_skills`: replay after ``since`` (None: from now), SYNCED,
        then each change (and SYNCED position markers); reopened from the last ``seq``
        received after ``UNAVAILABLE``; ends with :class:`PermissionDenied`
        (``TOKEN_EXPIRED``) when the token expires: resume with a fresh one.
        """
        ids = builtins.list(skill_ids)
        position = since
        delays = self.connection.retry.delays()
        while True:
            call = self._stub.WatchSkills(
                _common.watch_request(ids, position), metadata=self._metadata
            )
            try:
                async for event in call:
                    position = event.seq
                    delays = self.connection.retry.delays()
                    yield event
                return
            except grpc.aio.AioRpcError as exc:
                delay = next(delays, None)
                if exc.code() != grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(delay)
            finally:
                call.cancel()

    async def wait(self, operation_id: str) -> resources_pb2.Operation:
        """Follow an operation to its end; raise :class:`InstallFailed` if it failed."""
        async for _ in self.watch(operation_id):
            pass
        op = await self.operation(operation_id)
        if op.state != resources_pb2.OPERATION_STATE_SUCCEEDED:
            raise InstallFailed(op)
        return op

    def install(
        self,
        source: Source,
        skill: str | None = None,
        version: str | None = None,
        activate: bool = True,
        *,
        request_id: str | None = None,
    ) -> AsyncInstall:
        """Install a folder (packed deterministically), an archive file, bytes or a URL.

        Nothing happens until the result is iterated (progress events: the upload's
        bytes, then every stage on the server) or awaited with :meth:`AsyncInstall.wait`.
        The skill id defaults to SKILL.md's ``name``.
        """
        prepared = _common.prepare(source, skill, version, need_skill=True)
        return AsyncInstall(self, prepared, activate, request_id or _common.new_request_id())

    async def validate(
        self, source: Source, skill: str | None = None, version: str | None = None
    ) -> resources_pb2.ValidationReport:
        """Validate a package without installing it."""
        prepared = _common.prepare(source, skill, version, need_skill=False)
        first, pieces = _common.validate_requests(prepared)

        async def attempt() -> resources_pb2.ValidationReport:
            call = self._stub.Validate(
                timeout=self.connection.transfer_timeout, metadata=self._metadata
            )
            await _send(call, first, pieces, skill_service_pb2.ValidateRequest)
            result: resources_pb2.ValidationReport = await call
            return result

        return await self._call(attempt)

    async def download(
        self, skill_id: str, destination: str | os.PathLike[str], *, version: str = ""
    ) -> skill_service_pb2.PackageInfo:
        """Download a package's original archive to ``destination``, verifying its sha256.

        The file appears only once the digest matched (:class:`IntegrityError` if not).
        """
        request = skill_service_pb2.DownloadPackageRequest(skill_id=skill_id, version=version)

        async def attempt() -> tuple[skill_service_pb2.PackageInfo, list[bytes]]:
            info = skill_service_pb2.PackageInfo()
            pieces: list[bytes] = []
            async for message in self._stub.DownloadPackage(
                request, timeout=self.connection.transfer_timeout, metadata=self._metadata
            ):
                if message.HasField("info"):
                    info = message.info
                else:
                    pieces.append(message.chunk)
            return info, pieces

        info, pieces = await self._call(attempt)
        await asyncio.to_thread(write_verified, Path(destination), pieces, info)
        return info


async def _send(call: Any, first: Any, pieces: list[bytes], kind: Any) -> None:
    """Write the spec and the chunks, then half-close; a rejected call surfaces on await."""
    try:
        await call.write(first)
        for piece in pieces:
            await call.write(kind(chunk=piece))
        await call.done_writing()
    except asyncio.InvalidStateError:
        pass  # the server already ended the call: awaiting it raises its status


class AsyncInstall(_common.InstallState):
    """One install: async-iterate for progress events, or :meth:`wait` for the result."""

    def __init__(
        self, client: AsyncClient, prepared: Prepared, activate: bool, request_id: str
    ) -> None:
        self._client = client
        super().__init__(prepared, activate, request_id)

    async def _upload(self) -> AsyncIterator[resources_pb2.InstallEvent]:
        client, prepared = self._client, self._prepared
        first, pieces = _common.install_requests(
            prepared, activate=self._activate, request_id=self.request_id
        )
        delays = client.connection.retry.delays()
        while True:
            call = client._stub.Install(
                timeout=client.connection.transfer_timeout, metadata=client._metadata
            )
            done = 0
            try:
                try:
                    await call.write(first)
                    for piece in pieces:
                        await call.write(skill_service_pb2.InstallRequest(chunk=piece))
                        done += len(piece)
                        yield _common.upload_event(done, prepared.size)
                    await call.done_writing()
                except asyncio.InvalidStateError:
                    pass
                self.operation = await call
                return
            except grpc.aio.AioRpcError as exc:
                delay = next(delays, None)
                if exc.code() != grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(delay)

    async def __aiter__(self) -> AsyncIterator[resources_pb2.InstallEvent]:
        if self.operation is None:
            async for event in self._upload():
                yield event
        assert self.operation is not None
        yield _common.operation_event(self.operation)
        async for event in self._client.watch(self.operation.operation_id):
            yield event

    async def wait(self) -> resources_pb2.Operation:
        """Upload (if not done yet), follow the install to its end and return the
        operation; raise :class:`InstallFailed` if it failed."""
        async for _ in self:
            pass
        assert self.operation is not None
        op = await self._client.operation(self.operation.operation_id)
        if op.state != resources_pb2.OPERATION_STATE_SUCCEEDED:
            raise InstallFailed(op)
        return op


__all__ = ["AsyncClient", "AsyncInstall"]
