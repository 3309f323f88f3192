"""Rebuilding an ``RpcMethodHandler`` around wrapped behaviours, for interceptors.

grpc.aio interceptors receive a handler whose behaviour is one of four shapes; an
interceptor that needs to see requests, results or exceptions supplies one wrapper
for awaitable behaviours (unary responses) and one for async generators (streamed
responses), and :func:`wrap_handler` puts the handler back together. :class:`LayeredInterceptor`
applies all the layers as one grpc.aio interceptor.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

import grpc

UnaryBehavior = Callable[[Any, Any], Awaitable[Any]]
# A streaming behaviour is either an async generator of responses or a coroutine that
# writes them with ``context.write`` (grpc_health's Watch does the latter).
StreamBehavior = Callable[[Any, Any], Any]


async def stream_of(result: Any) -> AsyncGenerator[Any, None]:
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


class WrappingInterceptor:
    """One layer of per-call work (tracing, metrics, errors, auth) around each method.

    A layer wraps a method's handler once; :class:`LayeredInterceptor` applies the
    layers and reuses the result for every later call of that method. Per-call facts
    (metadata, the caller) are read inside the wrapped behaviour.
    """

    async def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to serve ``method`` (``/package.Service/Method``) with.

        A coroutine, so a layer may delegate to a grpc.aio interceptor (tracing does).
        """
        raise NotImplementedError


class LayeredInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The server's one grpc.aio interceptor: every layer, wrapped once per method.

    grpc.aio runs each interceptor's ``intercept_service`` as a coroutine chained to the
    next for every RPC, and rebuilding closures and a handler per call costs more than
    most handlers do (a read RPC served from the cache spent a tenth of its CPU in the
    chain of five). One interceptor applies the layers, outermost first, once per
    method, and serves the cached result as long as the service's handler (the same
    object every time) is unchanged.
    """

    def __init__(self, layers: Sequence[WrappingInterceptor]) -> None:
        self._layers = tuple(reversed(layers))  # innermost first, as they are applied
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

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
        wrapped = handler
        for layer in self._layers:
            wrapped = await layer.wrap(method, wrapped)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
