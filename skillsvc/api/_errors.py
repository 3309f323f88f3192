"""The one place where domain errors become gRPC statuses.

:func:`render_status` builds a ``google.rpc.Status`` with rich details (``ErrorInfo``
always; ``BadRequest`` for field violations; ``QuotaFailure`` for quotas; the
``ValidationReport`` of a failed validation) from an error's record, for RPC errors
(:func:`to_status`) and stored operation failures alike. The
:class:`ErrorInterceptor` applies it to every RPC, unary and streaming: deliberate
errors keep their code, anything else is logged with its traceback and sent as a
generic ``INTERNAL``. A client that went away is not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from skillsvc.api._handlers import (
    StreamBehavior,
    UnaryBehavior,
    WrappingInterceptor,
    stream_of,
    wrap_handler,
)
from skillsvc.api._reports import report_dict_to_pb
from skillsvc.core.failures import error_record
from skillsvc.core.models import OperationError
from skillsvc.errors import SkillsvcError

logger = logging.getLogger(__name__)

ERROR_DOMAIN: Final = "skillsvc.v1"


def pack(message: Any) -> any_pb2.Any:
    """``message`` packed into a ``google.protobuf.Any``."""
    packed = any_pb2.Any()
    # Deterministic: map entries (ErrorInfo metadata) in key order, so one status is
    # the same bytes whichever path (an RPC error, a stored failure) built it.
    packed.Pack(message, deterministic=True)
    return packed


def render_status(error: OperationError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of a recorded error: the one rendering of every failure.

    RPC errors (:func:`to_status`) and stored operation failures both come here, from
    the same record (:func:`skillsvc.core.failures.error_record`), so a background
    failure carries what the RPC error would: ErrorInfo (reason, metadata), BadRequest,
    QuotaFailure and the ValidationReport.
    """
    details = error.details or {}
    status = status_pb2.Status(code=code_pb2.Code.Value(error.code), message=error.message)
    status.details.append(
        pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason,
                domain=ERROR_DOMAIN,
                metadata={str(k): str(v) for k, v in details.get("metadata", {}).items()},
            )
        )
    )
    if details.get("field_violations"):
        status.details.append(
            pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v["field"], description=v["description"]
                        )
                        for v in details["field_violations"]
                    ]
                )
            )
        )
    if details.get("quota_violations"):
        status.details.append(
            pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=v["subject"], description=v["description"]
                        )
                        for v in details["quota_violations"]
                    ]
                )
            )
        )
    if details.get("validation_report"):
        status.details.append(pack(report_dict_to_pb(details["validation_report"])))
    return status


def to_status(error: SkillsvcError, extra_details: tuple[Any, ...] = ()) -> status_pb2.Status:
    """The ``google.rpc.Status`` for a domain error, with its rich details."""
    status = render_status(error_record(error))
    for detail in extra_details:
        status.details.append(pack(detail))
    return status


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status
) -> None:
    """End the RPC with ``status`` (details travel in ``grpc-status-details-bin``)."""
    grpc_status = rpc_status.to_status(status)
    await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)


_INTERNAL: Final = status_pb2.Status(
    code=code_pb2.INTERNAL, message="internal error; the server logged the details"
)


async def _handle(
    error: BaseException, context: grpc.aio.ServicerContext[Any, Any], method: str
) -> None:
    if isinstance(error, SkillsvcError):
        if error.status == "INTERNAL":
            logger.error("%s failed: %s", method, error.message, exc_info=error)
        await abort_with(context, to_status(error))
    logger.error("%s raised an unexpected error", method, exc_info=error)
    await abort_with(context, _INTERNAL)


# grpc's own AbortError (raised by context.abort) must pass through untouched.
_PASS_THROUGH: Final = (grpc.aio.AbortError, asyncio.CancelledError)


class ErrorInterceptor(WrappingInterceptor):
    """Maps exceptions raised by handlers to statuses, for all four RPC shapes."""

    async def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            async def behavior(request: Any, context: Any) -> Any:
                try:
                    return await inner(request, context)
                except _PASS_THROUGH:
                    raise
                except Exception as exc:
                    await _handle(exc, context, method)

            return behavior

        def stream(inner: StreamBehavior) -> StreamBehavior:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    async for response in stream_of(inner(request, context)):
                        yield response
                except _PASS_THROUGH:
                    raise
                except Exception as exc:
                    await _handle(exc, context, method)

            return behavior

        return wrap_handler(handler, unary=unary, stream=stream)
