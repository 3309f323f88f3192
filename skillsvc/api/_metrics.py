"""Per-RPC Prometheus counters and latency histograms, as a server interceptor.

It sits outside the error interceptor, so it sees the final status code.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from skillsvc.api._handlers import (
    StreamBehavior,
    UnaryBehavior,
    WrappingInterceptor,
    stream_of,
    wrap_handler,
)
from skillsvc.metrics import RPC_DURATION, RPC_TOTAL


def _code_name(context: Any, error: BaseException | None) -> str:
    if error is None:
        return "OK"
    code = context.code()
    # A handler that ended without a code was cancelled (the client went away).
    return code.name if isinstance(code, grpc.StatusCode) else "CANCELLED"


class MetricsInterceptor(WrappingInterceptor):
    """Counts every RPC by method and final code, and times it."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        name = method.rsplit("/", 1)[-1]
        duration = RPC_DURATION.labels(name)
        ok = RPC_TOTAL.labels(name, "OK")

        def record(context: Any, started: float, error: BaseException | None) -> None:
            duration.observe(time.perf_counter() - started)
            if error is None:
                ok.inc()
            else:
                RPC_TOTAL.labels(name, _code_name(context, error)).inc()

        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            async def behavior(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    response = await inner(request, context)
                except BaseException as exc:
                    record(context, started, exc)
                    raise
                record(context, started, None)
                return response

            return behavior

        def stream(inner: StreamBehavior) -> StreamBehavior:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    async for response in stream_of(inner(request, context)):
                        yield response
                except BaseException as exc:
                    record(context, started, exc)
                    raise
                record(context, started, None)

            return behavior

        return wrap_handler(handler, unary=unary, stream=stream)
