"""Rebuilding an ``RpcMethodHandler`` around wrapped behaviours, for interceptors.

grpc.aio interceptors receive a handler whose behaviour is one of four shapes; an
interceptor that needs to see requests, results or exceptions supplies one wrapper
for awaitable behaviours (unary responses) and one for async generators (streamed
responses), and :func:`wrap_handler` puts the handler back together.
"""

from __future__ import annotations

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
