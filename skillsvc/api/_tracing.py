"""OpenTelemetry spans for every RPC, as a server interceptor.

The span is a server span named ``skillsvc.v1.SkillService/Install`` (the gRPC
convention) with the ``rpc.*`` attributes and the final status code. Where the
spans go is the OpenTelemetry SDK's business: :func:`configure_tracing` installs a
tracer provider that honours the standard ``OTEL_*`` variables (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``…) and exports to the console
when ``OTEL_TRACES_EXPORTER=console``; an application embedding skillsvc may set its
own provider instead. Without one, the API's no-op tracer makes this nearly free.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from skillsvc.api._handlers import (
    StreamBehavior,
    UnaryBehavior,
    WrappingInterceptor,
    stream_of,
    wrap_handler,
)


def configure_tracing(env: Mapping[str, str]) -> bool:
    """Install an SDK tracer provider when ``OTEL_TRACES_EXPORTER`` asks for one.

    Returns True when a provider was installed. Only ``console`` is built in; other
    exporters need their packages and a provider configured by the embedding program
    (or ``opentelemetry-instrument``).
    """
    exporter = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter in ("", "none"):
        return False
    if exporter != "console":
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={exporter!r} is not built in; use 'console' or 'none'"
        )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "skillsvc"}))
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def _finish(span: Any, context: Any, error: BaseException | None) -> None:
    if error is None:
        span.set_attribute("rpc.grpc.status_code", 0)
        return
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
    else:  # cancelled by the client
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.CANCELLED.value[0])


class TracingInterceptor(WrappingInterceptor):
    """Wraps each RPC in a server span."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        name = method.lstrip("/")
        service, _, rpc = name.rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            async def behavior(request: Any, context: Any) -> Any:
                tracer = trace.get_tracer("skillsvc")
                with tracer.start_as_current_span(
                    name, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
                ) as span:
                    try:
                        response = await inner(request, context)
                    except BaseException as exc:
                        _finish(span, context, exc)
                        raise
                    _finish(span, context, None)
                    return response

            return behavior

        def stream(inner: StreamBehavior) -> StreamBehavior:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                tracer = trace.get_tracer("skillsvc")
                with tracer.start_as_current_span(
                    name, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
                ) as span:
                    try:
                        async for response in stream_of(inner(request, context)):
                            yield response
                    except BaseException as exc:
                        _finish(span, context, exc)
                        raise
                    _finish(span, context, None)

            return behavior

        return wrap_handler(handler, unary=unary, stream=stream)
