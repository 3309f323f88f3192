"""The authentication interceptor: who is calling, and may their role call this RPC?

It runs before any handler: the token is verified and the role table applied while
the call is being routed, so a refused call never reaches the servicer and never
reads a byte of an upload stream. Services named in ``public_services`` (health and
reflection) pass without a token.

A verified caller reaches the servicer through a context variable set inside the
call's own task; :func:`current_caller` reads it and fails closed (UNAUTHENTICATED)
if nothing set it, so a handler can never run as an implicit admin by mistake.

It sits innermost (after the error interceptor), so its refusals are mapped to rich
statuses (``google.rpc.ErrorInfo`` with ``TOKEN_MISSING``, ``TOKEN_EXPIRED``,
``TOKEN_INVALID``, ``ROLE_NOT_ALLOWED``) like any other domain error.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, Final

import grpc

from skillsvc.api._handlers import StreamBehavior, UnaryBehavior, stream_of, wrap_handler
from skillsvc.auth import Authenticator, authorize
from skillsvc.core.models import Caller
from skillsvc.errors import SkillsvcError, Unauthenticated

logger = logging.getLogger(__name__)

AUTHORIZATION: Final = "authorization"
"""The metadata key of the bearer token (gRPC metadata keys are lower case)."""

_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("skillsvc_caller")


def current_caller() -> Caller:
    """The authenticated caller of the RPC being handled."""
    try:
        return _CALLER.get()
    except LookupError:
        raise Unauthenticated("the call was not authenticated", reason="TOKEN_MISSING") from None


def _authorization(details: grpc.HandlerCallDetails) -> list[str]:
    values = []
    for key, value in details.invocation_metadata or ():
        if key.lower() == AUTHORIZATION:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return values


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call and applies the role table before the handler runs."""

    def __init__(self, authenticator: Authenticator, public_services: Collection[str]) -> None:
        self._authenticator = authenticator
        self._public = frozenset(public_services)

    def _check(self, details: grpc.HandlerCallDetails) -> Caller:
        rpc = details.method.rpartition("/")[2]
        caller = self._authenticator.authenticate(_authorization(details))
        authorize(caller, rpc)
        return caller

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.lstrip("/").rpartition("/")[0]
        if handler is None or service in self._public:
            return handler
        try:
            outcome: Caller | SkillsvcError = self._check(handler_call_details)
        except SkillsvcError as exc:
            logger.debug("refused %s: %s", handler_call_details.method, exc.message)
            outcome = exc

        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            async def behavior(request: Any, context: Any) -> Any:
                if isinstance(outcome, SkillsvcError):
                    # Raised before ``request`` (an upload's message stream) is touched.
                    raise outcome
                # Each RPC runs in its own task with its own copy of the context, so
                # the caller set here is seen by this call's handler only.
                _CALLER.set(outcome)
                return await inner(request, context)

            return behavior

        def stream(inner: StreamBehavior) -> StreamBehavior:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                if isinstance(outcome, SkillsvcError):
                    raise outcome
                _CALLER.set(outcome)
                async for response in stream_of(inner(request, context)):
                    yield response

            return behavior

        return wrap_handler(handler, unary=unary, stream=stream)
