"""Rebuilding an ``RpcMethodHandler`` around wrapped behaviours, for interceptors.

grpc.aio interceptors receive a handler whose behaviour is one of four shapes; an
interceptor that needs to see requests, results or exceptions supplies one wrapper
for awaitable behaviours (unary responses) and one for async generators (streamed
responses), and :func:`wrap_handler` puts the handler back together.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

UnaryBehavior = Callable[[Any, Any], Awaitable[Any]]
# A streaming behaviour is either an async generator of responses or a coroutine that
# writes them with ``context.write`` (grpc_health's Watch does the latter).
StreamBehavior = Callable[[Any, Any], Any]


async def stream_of(result: Any) -> AsyncIterator[Any]:
    """Iterate a streaming behaviour's result, whichever of the two styles it uses."""
    if hasattr(result, "__aiter__"):
        # Closed with this generator, in the same task: an abandoned inner generator
        # would be finalised later by the event loop in another task and context.
        async with contextlib.aclosing(result):
            async for response in result:
                yield response
    else:
        await result


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    *,
    unary: Callable[[UnaryBehavior], UnaryBehavior],
    stream: Callable[[StreamBehavior], StreamBehavior],
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour passed through ``unary`` or ``stream``."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **kwargs)


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that wraps each method's behaviour once and reuses the result.

    grpc.aio calls ``intercept_service`` for every RPC; rebuilding closures and a
    handler per call costs more than most handlers do. The service's handler for a
    method is the same object every time, so the wrapped one is cached against it.
    Per-call facts (metadata, the caller) are read inside the wrapped behaviour.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to serve ``method`` (``/package.Service/Method``) with."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
