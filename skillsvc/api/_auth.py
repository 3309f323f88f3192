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
from collections.abc import AsyncIterator, Collection
from typing import Any, Final

import grpc

from skillsvc.api._handlers import (
    StreamBehavior,
    UnaryBehavior,
    WrappingInterceptor,
    stream_of,
    wrap_handler,
)
from skillsvc.auth import Authenticator, authorize
from skillsvc.core.models import Caller
from skillsvc.errors import Unauthenticated

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


def peek_caller() -> Caller | None:
    """The authenticated caller of the RPC being handled, if one was set (for logs)."""
    return _CALLER.get(None)


def _authorization(metadata: Any) -> list[str]:
    values = []
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return values


class AuthInterceptor(WrappingInterceptor):
    """Authenticates every call and applies the role table before the handler runs."""

    def __init__(self, authenticator: Authenticator, public_services: Collection[str]) -> None:
        super().__init__()
        self._authenticator = authenticator
        self._public = frozenset(public_services)

    async def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, rpc = method.lstrip("/").rpartition("/")
        if service in self._public:
            return handler

        def check(context: Any) -> None:
            caller = self._authenticator.authenticate(_authorization(context.invocation_metadata()))
            authorize(caller, rpc)
            # Each RPC runs in its own task with its own copy of the context, so the
            # caller set here is seen by this call's handler only.
            _CALLER.set(caller)

        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            async def behavior(request: Any, context: Any) -> Any:
                check(context)  # before ``request`` (an upload's message stream) is read
                return await inner(request, context)

            return behavior

        def stream(inner: StreamBehavior) -> StreamBehavior:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                check(context)
                async for response in stream_of(inner(request, context)):
                    yield response

            return behavior

        return wrap_handler(handler, unary=unary, stream=stream)
