"""Per-RPC Prometheus series and the access log, as one server interceptor.

Series are the grpc-ecosystem standard ones (see :mod:`skillsvc.metrics`): started,
handled by final code, messages received and sent, and the handling-time histogram.
Each RPC also writes one access line on the ``skillsvc.access`` logger: method, code,
duration, peer and the caller's subject (never its token). Health checks are logged at
DEBUG, since probes call them every few seconds; every other RPC at INFO.

It sits outside the error interceptor, so it sees the final status code, and inside
the tracing interceptor, so the access line carries the RPC's trace id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2

from skillsvc.api._auth import peek_caller
from skillsvc.api._handlers import (
    StreamBehavior,
    UnaryBehavior,
    WrappingInterceptor,
    stream_of,
    wrap_handler,
)
from skillsvc.metrics import (
    GRPC_HANDLED,
    GRPC_HANDLING,
    GRPC_MSG_RECEIVED,
    GRPC_MSG_SENT,
    GRPC_STARTED,
    GRPC_TYPES,
)

access_log = logging.getLogger("skillsvc.access")

_QUIET_SERVICES: Final = frozenset({health_pb2.DESCRIPTOR.services_by_name["Health"].full_name})


class _Call:
    """What one call's access line needs, read from the context while it is valid."""

    __slots__ = ("deadline", "peer", "started")

    def __init__(self, context: Any) -> None:
        self.peer = str(context.peer())
        self.started = time.perf_counter()
        remaining = context.time_remaining()
        self.deadline = None if remaining is None else self.started + remaining

    def code(self, context: Any, error: BaseException | None, now: float) -> str:
        """The call's final status code name."""
        # A response generator closed from outside may be finalised after the call is
        # gone, when the context must not be touched (peer() crashes the process).
        if not isinstance(error, GeneratorExit):
            code = context.code()
            if isinstance(code, grpc.StatusCode):
                return str(code.name)
            if error is None:
                return "OK"
        # Interrupted without a status: the deadline passed or the client went away.
        if self.deadline is not None and now >= self.deadline:
            return "DEADLINE_EXCEEDED"
        return "CANCELLED"


async def _counted(messages: AsyncIterator[Any], counter: Any) -> AsyncIterator[Any]:
    async for message in messages:
        counter.inc()
        yield message


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every RPC by type, service, method and code; logs its access line."""

    async def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, rpc = method.lstrip("/").rpartition("/")
        labels = (
            GRPC_TYPES[bool(handler.request_streaming), bool(handler.response_streaming)],
            service,
            rpc,
        )
        started_count = GRPC_STARTED.labels(*labels)
        handling = GRPC_HANDLING.labels(*labels)
        received = GRPC_MSG_RECEIVED.labels(*labels)
        sent = GRPC_MSG_SENT.labels(*labels)
        ok = GRPC_HANDLED.labels(*labels, "OK")
        level = logging.DEBUG if service in _QUIET_SERVICES else logging.INFO
        request_streaming = bool(handler.request_streaming)

        def begin(request: Any, context: Any) -> tuple[_Call, Any]:
            started_count.inc()
            if request_streaming:
                request = _counted(request, received)
            else:
                received.inc()
            return _Call(context), request

        def end(context: Any, call: _Call, error: BaseException | None) -> None:
            now = time.perf_counter()
            elapsed = now - call.started
            handling.observe(elapsed)
            code = call.code(context, error, now)
            peer = call.peer
            if code == "OK":
                ok.inc()
            else:
                GRPC_HANDLED.labels(*labels, code).inc()
            if access_log.isEnabledFor(level):
                caller = peek_caller()
                subject = caller.subject if caller is not None else "-"
                access_log.log(
                    level,
                    "%s %s %.1fms peer=%s subject=%s",
                    method,
                    code,
                    elapsed * 1000,
                    peer,
                    subject,
                    extra={
                        "grpc_method": method,
                        "grpc_code": code,
                        "duration_ms": round(elapsed * 1000, 3),
                        "peer": peer,
                        "subject": subject,
                    },
                )

        def unary(inner: UnaryBehavior) -> UnaryBehavior:
            async def behavior(request: Any, context: Any) -> Any:
                call, request = begin(request, context)
                try:
                    response = await inner(request, context)
                except BaseException as exc:
                    end(context, call, exc)
                    raise
                sent.inc()
                end(context, call, None)
                return response

            return behavior

        def stream(inner: StreamBehavior) -> StreamBehavior:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                call, request = begin(request, context)
                try:
                    async for response in stream_of(inner(request, context)):
                        sent.inc()
                        yield response
                except BaseException as exc:
                    end(context, call, exc)
                    raise
                end(context, call, None)

            return behavior

        return wrap_handler(handler, unary=unary, stream=stream)
