"""OpenTelemetry server spans for every RPC, continuing the caller's trace.

The spans come from ``opentelemetry-instrumentation-grpc``'s grpc.aio server
interceptor: it extracts the caller's W3C ``traceparent`` (and ``tracestate``,
``baggage``: whatever propagators ``OTEL_PROPAGATORS`` configures) from the call's
metadata, starts a SERVER span named ``/skillsvc.v1.SkillService/Install`` with the
``rpc.*`` attributes, and sets the status from ``context.abort``. Where spans go is
configured by :func:`skillsvc.tracing.configure_tracing`.

Two things make it safe here:

- The library iterates a streaming behaviour with ``async for``, which a behaviour
  written in the ``context.write`` style (grpc_health's ``Watch``) is not; the
  interceptors inside it (metrics, errors) turn every streaming behaviour into an async
  generator, so it must stay outside at least one of them.
- It attaches the trace context around the handler and detaches it when the handler
  ends, across the ``yield``s of a streaming response. grpc.aio stops iterating a
  response generator when the call ends early (the client cancelled, the deadline
  passed) without closing it; the event loop then finalises the abandoned generator in
  another task, whose context does not hold the token, and OpenTelemetry logs "Failed
  to detach context" with a traceback. :class:`StreamClosingInterceptor`, outermost,
  serves streaming responses with ``context.write`` and closes the generator chain in
  the call's own task, so every detach happens where its attach did.
"""

from __future__ import annotations

import contextlib
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from skillsvc.api._handlers import UnaryBehavior, WrappingInterceptor, wrap_handler


class StreamClosingInterceptor(WrappingInterceptor):
    """Serves streaming responses by ``context.write``, closing the generator in-task."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not handler.response_streaming:
            return handler

        def stream(inner: Any) -> Any:
            async def behavior(request: Any, context: Any) -> None:
                responses = inner(request, context)
                if not hasattr(responses, "__aiter__"):
                    await responses  # already in the write style
                    return
                async with contextlib.aclosing(responses):
                    async for response in responses:
                        await context.write(response)

            return behavior

        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            return inner

        return wrap_handler(handler, unary=unary, stream=stream)


def tracing_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptors that trace RPCs, outermost first (see the module docstring).

    Health checks are not traced: probes call them every few seconds, and a span each
    would be noise in every trace backend (and a quarter of a health check's CPU).
    """
    not_health = filters.negate(filters.health_check())
    return [
        StreamClosingInterceptor(),
        aio_server_interceptor(filter_=not_health),  # type: ignore[no-untyped-call]
    ]
