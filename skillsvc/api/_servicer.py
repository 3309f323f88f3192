"""The SkillService servicer: converts protobuf to domain calls and back.

It decides nothing itself; the domain (``skillsvc.core``) does. Errors propagate as
domain exceptions and are mapped to statuses by :class:`~skillsvc.api.ErrorInterceptor`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from skillsvc.api._convert import definition_to_pb
from skillsvc.core.definitions import Definitions, NewDefinition
from skillsvc.core.models import ANONYMOUS_ADMIN, Caller, DefinitionChanges
from skillsvc.errors import InvalidArgument, Unimplemented
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _caller(context: Context) -> Caller:
    # Authentication (SPEC §7) is not built yet: every caller is the loopback admin
    # that SKILLSVC_AUTH=none describes.
    return ANONYMOUS_ADMIN


def _unimplemented(what: str) -> Unimplemented:
    return Unimplemented(f"{what} is not implemented yet", reason="NOT_IMPLEMENTED")


class SkillService(skill_service_pb2_grpc.SkillServiceServicer):
    """``skillsvc.v1.SkillService``."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions

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
        await self._definitions.delete(_caller(context), request.skill_id, force=request.force)
        return empty_pb2.Empty()

    # -- installs, packages and operations: later milestones ----------------------

    async def Install(
        self, request_iterator: AsyncIterator[skill_service_pb2.InstallRequest], context: Context
    ) -> resources_pb2.Operation:
        raise _unimplemented("Install (the install pipeline)")

    async def InstallProgress(
        self, request: skill_service_pb2.InstallProgressRequest, context: Context
    ) -> AsyncIterator[resources_pb2.InstallEvent]:
        raise _unimplemented("InstallProgress (the install pipeline)")
        yield  # pragma: no cover - makes this an async generator

    async def GetOperation(
        self, request: skill_service_pb2.GetOperationRequest, context: Context
    ) -> resources_pb2.Operation:
        raise _unimplemented("GetOperation (the install log)")

    async def ListOperations(
        self, request: skill_service_pb2.ListOperationsRequest, context: Context
    ) -> skill_service_pb2.ListOperationsResponse:
        raise _unimplemented("ListOperations (the install log)")

    async def Retry(
        self, request: skill_service_pb2.RetryRequest, context: Context
    ) -> resources_pb2.Operation:
        raise _unimplemented("Retry")

    async def Rollback(
        self, request: skill_service_pb2.RollbackRequest, context: Context
    ) -> resources_pb2.Operation:
        raise _unimplemented("Rollback")

    async def Validate(
        self, request_iterator: AsyncIterator[skill_service_pb2.ValidateRequest], context: Context
    ) -> resources_pb2.ValidationReport:
        raise _unimplemented("Validate (the package validator)")

    async def ListPackages(
        self, request: skill_service_pb2.ListPackagesRequest, context: Context
    ) -> skill_service_pb2.ListPackagesResponse:
        raise _unimplemented("ListPackages (the install pipeline)")

    async def GetPackage(
        self, request: skill_service_pb2.GetPackageRequest, context: Context
    ) -> resources_pb2.SkillPackage:
        raise _unimplemented("GetPackage (the install pipeline)")

    async def DeletePackage(
        self, request: skill_service_pb2.DeletePackageRequest, context: Context
    ) -> empty_pb2.Empty:
        raise _unimplemented("DeletePackage")

    async def DownloadPackage(
        self, request: skill_service_pb2.DownloadPackageRequest, context: Context
    ) -> AsyncIterator[skill_service_pb2.DownloadPackageResponse]:
        raise _unimplemented("DownloadPackage (the install pipeline)")
        yield  # pragma: no cover - makes this an async generator
