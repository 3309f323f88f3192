"""The SkillService servicer: converts protobuf to domain calls and back.

It decides nothing itself; the domain (``skillsvc.core``) does. Errors propagate as
domain exceptions and are mapped to statuses by :class:`~skillsvc.api.ErrorInterceptor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from skillsvc.api._auth import current_caller
from skillsvc.api._convert import (
    definition_to_pb,
    event_to_pb,
    operation_to_pb,
    package_to_pb,
    report_to_pb,
    skill_event_to_pb,
)
from skillsvc.core.catalog import Catalog
from skillsvc.core.definitions import Definitions, NewDefinition
from skillsvc.core.installs import Installer, InstallRequest
from skillsvc.core.lifecycle import Lifecycle
from skillsvc.core.models import Caller, DefinitionChanges, SourceType
from skillsvc.core.watch import WatchHub
from skillsvc.errors import InvalidArgument, Unauthenticated
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

CANCEL_SETTLE_SECONDS = 0.1

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _caller(context: Context) -> Caller:
    # Set by the AuthInterceptor before the handler runs (the loopback admin under
    # SKILLSVC_AUTH=none); UNAUTHENTICATED if nothing set it.
    return current_caller()


class SkillService(skill_service_pb2_grpc.SkillServiceServicer):
    """``skillsvc.v1.SkillService``."""

    def __init__(
        self,
        definitions: Definitions,
        installer: Installer,
        catalog: Catalog,
        lifecycle: Lifecycle,
        watch: WatchHub,
    ) -> None:
        self._lifecycle = lifecycle
        self._watch = watch
        self._definitions = definitions
        self._installer = installer
        self._catalog = catalog

    # -- definitions -------------------------------------------------------------

    async def CreateSkillDefinition(
        self, request: skill_service_pb2.CreateSkillDefinitionRequest, context: Context
    ) -> resources_pb2.SkillDefinition:
        if not request.HasField("definition"):
            raise InvalidArgument.field("definition", "is required")
        d = request.definition
        created = await self._definitions.create(
            _caller(context),
            NewDefinition(
                skill_id=d.skill_id,
                tenant=d.tenant,
                display_name=d.display_name,
                description=d.description,
                active=d.active if d.HasField("active") else None,
                public=d.public if d.HasField("public") else None,
            ),
        )
        return definition_to_pb(created)

    async def GetSkillDefinition(
        self, request: skill_service_pb2.GetSkillDefinitionRequest, context: Context
    ) -> resources_pb2.SkillDefinition:
        found = await self._definitions.get(_caller(context), request.skill_id)
        return definition_to_pb(found)

    async def ListSkillDefinitions(
        self, request: skill_service_pb2.ListSkillDefinitionsRequest, context: Context
    ) -> skill_service_pb2.ListSkillDefinitionsResponse:
        rows, token = await self._definitions.list(
            _caller(context),
            page_size=request.page_size,
            page_token=request.page_token,
            include_inactive=request.include_inactive,
        )
        return skill_service_pb2.ListSkillDefinitionsResponse(
            definitions=[definition_to_pb(r) for r in rows], next_page_token=token
        )

    async def UpdateSkillDefinition(
        self, request: skill_service_pb2.UpdateSkillDefinitionRequest, context: Context
    ) -> resources_pb2.SkillDefinition:
        if not request.HasField("definition"):
            raise InvalidArgument.field("definition", "is required")
        d = request.definition
        updated = await self._definitions.update(
            _caller(context),
            d.skill_id,
            DefinitionChanges(
                display_name=d.display_name,
                description=d.description,
                active=d.active if d.HasField("active") else None,
                public=d.public if d.HasField("public") else None,
            ),
            list(request.update_mask.paths),
        )
        return definition_to_pb(updated)

    async def DeleteSkillDefinition(
        self, request: skill_service_pb2.DeleteSkillDefinitionRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._lifecycle.delete_definition(
            _caller(context), request.skill_id, force=request.force
        )
        return empty_pb2.Empty()

    # -- installs and the install log ------------------------------------------------

    async def Install(
        self, request_iterator: AsyncIterator[skill_service_pb2.InstallRequest], context: Context
    ) -> resources_pb2.Operation:
        req, chunks = await _install_stream(request_iterator)
        op = await self._installer.install(_caller(context), req, chunks)
        return operation_to_pb(op)

    async def InstallProgress(
        self, request: skill_service_pb2.InstallProgressRequest, context: Context
    ) -> AsyncIterator[resources_pb2.InstallEvent]:
        async for item in self._catalog.watch(_caller(context), request.operation_id):
            yield event_to_pb(item)

    async def GetOperation(
        self, request: skill_service_pb2.GetOperationRequest, context: Context
    ) -> resources_pb2.Operation:
        op = await self._catalog.get_operation(_caller(context), request.operation_id)
        return operation_to_pb(op)

    async def ListOperations(
        self, request: skill_service_pb2.ListOperationsRequest, context: Context
    ) -> skill_service_pb2.ListOperationsResponse:
        rows, token = await self._catalog.list_operations(
            _caller(context),
            request.skill_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return skill_service_pb2.ListOperationsResponse(
            operations=[operation_to_pb(r) for r in rows], next_page_token=token
        )

    async def Retry(
        self, request: skill_service_pb2.RetryRequest, context: Context
    ) -> resources_pb2.Operation:
        op = await self._installer.retry(_caller(context), request.operation_id)
        return operation_to_pb(op)

    async def Rollback(
        self, request: skill_service_pb2.RollbackRequest, context: Context
    ) -> resources_pb2.Operation:
        op = await self._lifecycle.rollback(
            _caller(context), request.skill_id, request.target_version, request.reason
        )
        return operation_to_pb(op)

    async def Validate(
        self, request_iterator: AsyncIterator[skill_service_pb2.ValidateRequest], context: Context
    ) -> resources_pb2.ValidationReport:
        req, chunks = await _install_stream(request_iterator)
        report = await self._installer.validate(req, chunks)
        return report_to_pb(report)

    # -- packages ------------------------------------------------------------------------

    async def ListPackages(
        self, request: skill_service_pb2.ListPackagesRequest, context: Context
    ) -> skill_service_pb2.ListPackagesResponse:
        rows, token = await self._catalog.list_packages(
            _caller(context),
            request.skill_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return skill_service_pb2.ListPackagesResponse(
            packages=[package_to_pb(r) for r in rows], next_page_token=token
        )

    async def GetPackage(
        self, request: skill_service_pb2.GetPackageRequest, context: Context
    ) -> resources_pb2.SkillPackage:
        package = await self._catalog.get_package(
            _caller(context), request.skill_id, request.version
        )
        return package_to_pb(package)

    async def DeletePackage(
        self, request: skill_service_pb2.DeletePackageRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._lifecycle.delete_package(_caller(context), request.skill_id, request.version)
        return empty_pb2.Empty()

    async def DownloadPackage(
        self, request: skill_service_pb2.DownloadPackageRequest, context: Context
    ) -> AsyncIterator[skill_service_pb2.DownloadPackageResponse]:
        package, chunks = await self._catalog.download(
            _caller(context), request.skill_id, request.version
        )
        yield skill_service_pb2.DownloadPackageResponse(
            info=skill_service_pb2.PackageInfo(
                skill_id=package.skill_id,
                version=package.version,
                sha256=package.sha256,
                size_bytes=package.size_bytes,
            )
        )
        async for chunk in chunks:
            yield skill_service_pb2.DownloadPackageResponse(chunk=chunk)

    # -- the change stream ---------------------------------------------------------------

    async def WatchSkills(
        self, request: skill_service_pb2.WatchSkillsRequest, context: Context
    ) -> AsyncIterator[resources_pb2.SkillEvent]:
        caller = _caller(context)
        events = self._watch.watch(
            caller.visible_tenant,
            list(request.skill_ids),
            request.since if request.HasField("since") else None,
        )
        async with contextlib.aclosing(events):
            if caller.expires_at is None:
                async for item in events:
                    yield skill_event_to_pb(item)
                return
            # The token was checked when the call started; it must not keep the
            # stream open past its exp. The deadline bounds each wait for the next
            # event only (never a send), so it cancels nothing but the hub's wait.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (caller.expires_at - time.time())
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise _token_expired() from None
                if loop.time() >= deadline:
                    raise _token_expired()
                yield skill_event_to_pb(item)


def _token_expired() -> Unauthenticated:
    return Unauthenticated(
        "the token has expired; watch again with a fresh token and since set to the "
        "last seq received",
        reason="TOKEN_EXPIRED",
    )


async def _install_stream(
    request_iterator: AsyncIterator[Any],
) -> tuple[InstallRequest, AsyncIterator[bytes] | None]:
    """The spec opening an Install or Validate stream, and the upload's bytes after it.

    ``InstallSpec`` and ``ValidateSpec`` share their fields; Validate has no
    ``activate`` or ``request_id``.
    """
    messages = aiter(request_iterator)
    first = await anext(messages, None)
    if first is None or first.WhichOneof("payload") != "spec":
        raise InvalidArgument.field("spec", "the first message of the stream must carry the spec")
    spec = first.spec
    source = {"upload": SourceType.UPLOAD, "url": SourceType.URL}.get(
        spec.WhichOneof("source") or ""
    )
    has_activate = "activate" in spec.DESCRIPTOR.fields_by_name and spec.HasField("activate")
    req = InstallRequest(
        skill_id=spec.skill_id,
        version=spec.version,
        source_type=source,
        url=spec.url,
        declared_size=spec.upload.size_bytes,
        sha256=spec.sha256,
        activate=spec.activate if has_activate else True,
        request_id=getattr(spec, "request_id", ""),
    )
    chunks = _chunks(messages, spec.upload.size_bytes) if source is SourceType.UPLOAD else None
    return req, chunks


async def _chunks(messages: AsyncIterator[Any], declared: int) -> AsyncIterator[bytes]:
    """The archive bytes that follow the spec."""
    received = 0
    async for message in messages:
        if message.WhichOneof("payload") != "chunk":
            raise InvalidArgument.field("spec", "only chunk messages may follow the spec")
        received += len(message.chunk)
        yield message.chunk
    if received < declared:
        # A call cancelled by the client ends its request stream like a short one, and
        # the cancellation reaches the handler a moment later: give it that moment, so
        # the operation records CANCELLED rather than a size mismatch.
        await asyncio.sleep(CANCEL_SETTLE_SECONDS)
