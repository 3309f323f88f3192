"""The blocking client: :class:`Client` (the same surface as :class:`AsyncClient`)."""

from __future__ import annotations

import builtins
import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from skillsvc_client import _common
from skillsvc_client._common import Connection, Prepared, Source
from skillsvc_client._errors import InstallFailed, from_rpc_error
from skillsvc_client._files import write_verified
from skillsvc_client.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

T = TypeVar("T")


class Client:
    """A blocking skillsvc client.

    Use it as a context manager (or call :meth:`close`)::

        with Client(Connection("127.0.0.1:50051")) as client:
            install = client.install("./pdf-tools")
            for event in install:
                print(event.stage, event.bytes_done)
            operation = install.wait()
    """

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection or Connection()
        """How this client reaches the server."""
        conn = self.connection
        if conn.secure:
            self._channel = grpc.secure_channel(
                conn.address, conn.credentials(), conn.channel_options()
            )
        else:
            self._channel = grpc.insecure_channel(conn.address, conn.channel_options())
        self._stub = skill_service_pb2_grpc.SkillServiceStub(self._channel)
        self._metadata = conn.metadata()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, attempt: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``attempt``, retrying on ``UNAVAILABLE`` when safe; map errors."""
        delays = self.connection.retry.delays() if idempotent else iter(())
        while True:
            try:
                return attempt()
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise from_rpc_error(exc) from None

    def _unary(self, name: str, request: Any, *, idempotent: bool = True) -> Any:
        method = getattr(self._stub, name)
        timeout = self.connection.timeout
        return self._call(
            lambda: method(request, timeout=timeout, metadata=self._metadata),
            idempotent=idempotent,
        )

    # -- definitions ---------------------------------------------------------------

    def create(
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
        result: resources_pb2.SkillDefinition = self._unary(
            "CreateSkillDefinition",
            skill_service_pb2.CreateSkillDefinitionRequest(definition=definition),
            idempotent=False,
        )
        return result

    def get(self, skill_id: str) -> resources_pb2.SkillDefinition:
        """A skill definition; ``NotFound`` if it does not exist or is not visible."""
        result: resources_pb2.SkillDefinition = self._unary(
            "GetSkillDefinition", skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill_id)
        )
        return result

    def list(
        self, *, include_inactive: bool = False
    ) -> builtins.list[resources_pb2.SkillDefinition]:
        """Every definition the caller can see, across all pages."""
        return self._all_pages(
            "ListSkillDefinitions",
            lambda token: skill_service_pb2.ListSkillDefinitionsRequest(
                page_size=_common.PAGE_SIZE, page_token=token, include_inactive=include_inactive
            ),
            "definitions",
        )

    def update(
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
        result: resources_pb2.SkillDefinition = self._unary("UpdateSkillDefinition", request)
        return result

    def delete(self, skill_id: str, *, force: bool = False) -> None:
        """Delete a definition; ``force`` also removes its packages and files."""
        self._unary(
            "DeleteSkillDefinition",
            skill_service_pb2.DeleteSkillDefinitionRequest(skill_id=skill_id, force=force),
            idempotent=False,
        )

    def _all_pages(
        self, method: str, request: Callable[[str], Any], field: str
    ) -> builtins.list[Any]:
        """Every item of a paged List RPC: ``request(token)`` builds each page's request."""
        found: builtins.list[Any] = []
        token = ""
        while True:
            page = self._unary(method, request(token))
            found += getattr(page, field)
            token = page.next_page_token
            if not token:
                return found

    # -- packages and operations ---------------------------------------------------

    def versions(self, skill_id: str) -> builtins.list[resources_pb2.SkillPackage]:
        """Every package (version) of a skill, newest first, across all pages."""
        return self._all_pages(
            "ListPackages",
            lambda token: skill_service_pb2.ListPackagesRequest(
                skill_id=skill_id, page_size=_common.PAGE_SIZE, page_token=token
            ),
            "packages",
        )

    def package(self, skill_id: str, version: str = "") -> resources_pb2.SkillPackage:
        """One package; the current one when ``version`` is empty."""
        result: resources_pb2.SkillPackage = self._unary(
            "GetPackage", skill_service_pb2.GetPackageRequest(skill_id=skill_id, version=version)
        )
        return result

    def history(self, skill_id: str) -> builtins.list[resources_pb2.Operation]:
        """Every operation on a skill (the install log), newest first, across all pages."""
        return self._all_pages(
            "ListOperations",
            lambda token: skill_service_pb2.ListOperationsRequest(
                skill_id=skill_id, page_size=_common.PAGE_SIZE, page_token=token
            ),
            "operations",
        )

    def operation(self, operation_id: str) -> resources_pb2.Operation:
        """One operation by id."""
        result: resources_pb2.Operation = self._unary(
            "GetOperation", skill_service_pb2.GetOperationRequest(operation_id=operation_id)
        )
        return result

    def rollback(self, skill_id: str, *, to: str = "", reason: str = "") -> resources_pb2.Operation:
        """Make ``to`` (default: the last known-good version) current again."""
        result: resources_pb2.Operation = self._unary(
            "Rollback",
            skill_service_pb2.RollbackRequest(skill_id=skill_id, target_version=to, reason=reason),
            idempotent=False,
        )
        return result

    def retry(self, operation_id: str) -> resources_pb2.Operation:
        """Start a new attempt of a failed install; follow it with :meth:`watch`/:meth:`wait`."""
        result: resources_pb2.Operation = self._unary(
            "Retry", skill_service_pb2.RetryRequest(operation_id=operation_id), idempotent=False
        )
        return result

    def watch(self, operation_id: str) -> Iterator[resources_pb2.InstallEvent]:
        """An operation's progress events, ending after the terminal one.

        A stream cut by ``UNAVAILABLE`` is reopened (the server starts again with the
        current state, so an event may repeat).
        """
        delays = self.connection.retry.delays()
        request = skill_service_pb2.InstallProgressRequest(operation_id=operation_id)
        finished = False
        while True:
            try:
                for event in self._stub.InstallProgress(
                    request, timeout=self.connection.transfer_timeout, metadata=self._metadata
                ):
                    # Read to the end: the server closes the stream after the terminal event.
                    finished = finished or _common.is_terminal(event)
                    yield event
                return
            except grpc.RpcError as exc:
                delay = next(delays, None)
                if finished:
                    return
                if exc.code() != grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise from_rpc_error(exc) from None
                time.sleep(delay)

    def watch_skills(
        self, skill_ids: Iterable[str] = (), since: int | None = None
    ) -> Iterator[resources_pb2.SkillEvent]:
        """Changes of skills (every visible one when ``skill_ids`` is empty), forever.

        ``since`` is the ``seq`` of the last event seen earlier (None: from now). The
        server replays what followed it, sends a ``SKILL_EVENT_TYPE_SYNCED`` event, then
        each change as it happens; later SYNCED events are position markers (the
        stream moved past changes this caller may not see). A stream cut by
        ``UNAVAILABLE`` (a server shutting down, a lost connection) is reopened from
        the last ``seq`` received, markers included, so nothing is lost or repeated
        (another SYNCED follows the replay). Stop by leaving the loop.
        :class:`OutOfRange` when ``since`` is older than the history the server
        keeps: list again and watch from now. When the connection's token expires
        the server ends the stream (UNAUTHENTICATED, raised as
        :class:`PermissionDenied` with reason ``TOKEN_EXPIRED``): call again with a
        client holding a fresh token and ``since`` = the last ``seq`` received.
        """
        ids = builtins.list(skill_ids)
        position = since
        delays = self.connection.retry.delays()
        while True:
            call = self._stub.WatchSkills(
                _common.watch_request(ids, position), metadata=self._metadata
            )
            try:
                for event in call:
                    position = event.seq
                    delays = self.connection.retry.delays()
                    yield event
                return
            except grpc.RpcError as exc:
                delay = next(delays, None)
                if exc.code() != grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise from_rpc_error(exc) from None
                time.sleep(delay)
            finally:
                call.cancel()

    def wait(self, operation_id: str) -> resources_pb2.Operation:
        """Follow an operation to its end; raise :class:`InstallFailed` if it failed."""
        for _ in self.watch(operation_id):
            pass
        op = self.operation(operation_id)
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
    ) -> Install:
        """Install a folder (packed deterministically), an archive file, bytes or a URL.

        Nothing is sent until the result is iterated (progress events: the upload's
        bytes, then every stage on the server) or :meth:`Install.wait` is called.
        The skill id defaults to SKILL.md's ``name``.
        """
        prepared = _common.prepare(source, skill, version, need_skill=True)
        return Install(self, prepared, activate, request_id or _common.new_request_id())

    def validate(
        self, source: Source, skill: str | None = None, version: str | None = None
    ) -> resources_pb2.ValidationReport:
        """Validate a package without installing it."""
        prepared = _common.prepare(source, skill, version, need_skill=False)
        first, pieces = _common.validate_requests(prepared)

        def messages() -> Iterator[skill_service_pb2.ValidateRequest]:
            yield first
            for piece in pieces:
                yield skill_service_pb2.ValidateRequest(chunk=piece)

        def attempt() -> resources_pb2.ValidationReport:
            result: resources_pb2.ValidationReport = self._stub.Validate(
                messages(), timeout=self.connection.transfer_timeout, metadata=self._metadata
            )
            return result

        return self._call(attempt)

    def download(
        self, skill_id: str, destination: str | os.PathLike[str], *, version: str = ""
    ) -> skill_service_pb2.PackageInfo:
        """Download a package's original archive to ``destination``, verifying its sha256.

        The file appears only once the digest matched (:class:`IntegrityError` if not).
        """
        request = skill_service_pb2.DownloadPackageRequest(skill_id=skill_id, version=version)

        def attempt() -> tuple[skill_service_pb2.PackageInfo, list[bytes]]:
            info = skill_service_pb2.PackageInfo()
            pieces: list[bytes] = []
            for message in self._stub.DownloadPackage(
                request, timeout=self.connection.transfer_timeout, metadata=self._metadata
            ):
                if message.HasField("info"):
                    info = message.info
                else:
                    pieces.append(message.chunk)
            return info, pieces

        info, pieces = self._call(attempt)
        write_verified(Path(destination), pieces, info)
        return info


_END = object()


class Install(_common.InstallState):
    """One install: iterate for progress events, or :meth:`wait` for the result."""

    def __init__(self, client: Client, prepared: Prepared, activate: bool, request_id: str) -> None:
        self._client = client
        super().__init__(prepared, activate, request_id)

    def _upload(self) -> Iterator[resources_pb2.InstallEvent]:
        client, prepared = self._client, self._prepared
        first, pieces = _common.install_requests(
            prepared, activate=self._activate, request_id=self.request_id
        )
        delays = client.connection.retry.delays()
        while True:
            # gRPC pulls the request iterator on its own thread; the chunks it has taken
            # come back here as progress events through the queue.
            events: queue.SimpleQueue[object] = queue.SimpleQueue()

            def messages() -> Iterator[skill_service_pb2.InstallRequest]:
                yield first
                done = 0
                for piece in pieces:
                    yield skill_service_pb2.InstallRequest(chunk=piece)
                    done += len(piece)
                    events.put(_common.upload_event(done, prepared.size))  # noqa: B023

            future = client._stub.Install.future(
                messages(), timeout=client.connection.transfer_timeout, metadata=client._metadata
            )
            future.add_done_callback(lambda _: events.put(_END))  # noqa: B023
            while (item := events.get()) is not _END:
                assert isinstance(item, resources_pb2.InstallEvent)
                yield item
            try:
                self.operation = future.result()
                return
            except grpc.RpcError as exc:
                delay = next(delays, None)
                if exc.code() != grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise from_rpc_error(exc) from None
                time.sleep(delay)

    def __iter__(self) -> Iterator[resources_pb2.InstallEvent]:
        if self.operation is None:
            yield from self._upload()
        assert self.operation is not None
        yield _common.operation_event(self.operation)
        yield from self._client.watch(self.operation.operation_id)

    def wait(self) -> resources_pb2.Operation:
        """Upload (if not done yet), follow the install to its end and return the
        operation; raise :class:`InstallFailed` if it failed."""
        for _ in self:
            pass
        assert self.operation is not None
        op = self._client.operation(self.operation.operation_id)
        if op.state != resources_pb2.OPERATION_STATE_SUCCEEDED:
            raise InstallFailed(op)
        return op
