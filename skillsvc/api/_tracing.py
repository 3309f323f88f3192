"""OpenTelemetry server spans for every RPC, continuing the caller's trace.

With a tracer provider installed (:func:`skillsvc.tracing.configure_tracing`, or an
application embedding skillsvc), the spans come from
``opentelemetry-instrumentation-grpc``'s grpc.aio server interceptor: it extracts the
caller's W3C ``traceparent`` (and ``tracestate``, ``baggage``: whatever propagators
``OTEL_PROPAGATORS`` configures) from the call's metadata, starts a SERVER span named
``/skillsvc.v1.SkillService/Install`` with the ``rpc.*`` attributes, and sets the status
from ``context.abort``.

Without one (no exporter configured: the default), that interceptor would still cost
a read RPC a seventh of its CPU building a span nobody records. :class:`TracingInterceptor`
then only continues the caller's context, and only when the call carries one: it
attaches what the propagators extract, so log lines (and the install's background
task, which inherits the context) carry the caller's ``trace_id`` exactly as the no-op
span of the library would have given them. Whether a provider is installed is decided
once per method, at its first call on this server: install it before serving
(``skillsvc serve`` configures tracing before it builds the server).

Two things make it safe here:

- The library iterates a streaming behaviour with ``async for``, which a behaviour
  written in the ``context.write`` style (grpc_health's ``Watch``) is not; the
  layers inside it (metrics, errors) turn every streaming behaviour into an async
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
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from skillsvc.api._handlers import (
    StreamBehavior,
    UnaryBehavior,
    WrappingInterceptor,
    stream_of,
    wrap_handler,
)


class StreamClosingInterceptor(WrappingInterceptor):
    """Serves streaming responses by ``context.write``, closing the generator in-task."""

    async def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
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


def tracing_on() -> bool:
    """True when a tracer provider that records spans is installed."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


class _Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    """A method's call details, for wrapping it once (the library reads ``method``)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _CallerContext:
    """Extracts the trace context a call's metadata carries (None when it carries none).

    The propagators (``OTEL_PROPAGATORS``) are read when it is made: their fields are
    a set built anew by each read.
    """

    def __init__(self) -> None:
        self._propagator = propagate.get_global_textmap()
        self._fields = frozenset(self._propagator.fields)

    def __call__(self, context: Any) -> otel_context.Context | None:
        fields = self._fields
        carrier = {
            key: value for key, value in context.invocation_metadata() or () if key in fields
        }
        return self._propagator.extract(carrier) if carrier else None


class TracingInterceptor(WrappingInterceptor):
    """SERVER spans when tracing is on; otherwise only the caller's context, if any."""

    def __init__(self) -> None:
        # Health checks are not traced: probes call them every few seconds, and a span
        # each would be noise in every trace backend.
        self._traced = filters.negate(filters.health_check())
        self._spans = aio_server_interceptor(filter_=self._traced)  # type: ignore[no-untyped-call]

    async def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        details = _Details(method)
        if not self._traced(details):
            return handler
        if tracing_on():
            # The library's wrapping depends only on the method, so it is done once too.
            async def same(_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                return handler

            traced: grpc.RpcMethodHandler = await self._spans.intercept_service(same, details)
            return traced
        caller_context = _CallerContext()

        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            async def behavior(request: Any, context: Any) -> Any:
                caller = caller_context(context)
                if caller is None:
                    return await inner(request, context)
                token = otel_context.attach(caller)
                try:
                    return await inner(request, context)
                finally:
                    otel_context.detach(token)

            return behavior

        def stream(inner: StreamBehavior) -> StreamBehavior:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                caller = caller_context(context)
                token = None if caller is None else otel_context.attach(caller)
                try:
                    async for response in stream_of(inner(request, context)):
                        yield response
                finally:
                    if token is not None:
                        otel_context.detach(token)

            return behavior

        return wrap_handler(handler, unary=unary, stream=stream)


def tracing_interceptors() -> list[WrappingInterceptor]:
    """The layers that trace RPCs, outermost first (see the module docstring)."""
    return [StreamClosingInterceptor(), TracingInterceptor()]
