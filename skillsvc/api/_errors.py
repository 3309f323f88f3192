"""The one place where domain errors become gRPC statuses.

:func:`to_status` builds a ``google.rpc.Status`` with rich details (``ErrorInfo``
always; ``BadRequest`` for field violations; ``QuotaFailure`` for quotas). The
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
from skillsvc.errors import InvalidArgument, ResourceExhausted, SkillsvcError

logger = logging.getLogger(__name__)

ERROR_DOMAIN: Final = "skillsvc.v1"


def pack(message: Any) -> any_pb2.Any:
    """``message`` packed into a ``google.protobuf.Any``."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: SkillsvcError, extra_details: tuple[Any, ...] = ()) -> status_pb2.Status:
    """The ``google.rpc.Status`` for a domain error, with its rich details."""
    status = status_pb2.Status(
        code=code_pb2.Code.Value(error.status),
        message=error.message,
    )
    status.details.append(
        pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    )
    if isinstance(error, InvalidArgument) and error.violations:
        status.details.append(
            pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted) and error.violations:
        status.details.append(
            pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=v.subject, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
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

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
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
