"""``skillsvc serve`` exports spans over OTLP, configured only by ``OTEL_*`` variables."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.processes import free_port

collector = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
    reason="the OTLP exporter (skillsvc[otlp]) is not installed",
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: E402

TRACE_ID = "5b8efff798038103d269b633813fc60c"


class _Collector(collector.TraceServiceServicer):  # type: ignore[misc]
    """A stand-in for an OpenTelemetry collector's OTLP/gRPC receiver."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_reach_an_otlp_collector(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    sink = _Collector()
    server = grpc.aio.server()
    collector.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        served = await serve(
            SKILLSVC_DATABASE_URL=db_url,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_INSECURE="true",
            OTEL_SERVICE_NAME="skillsvc-under-test",
        )
        await served.wait_serving()
        async with grpc.aio.insecure_channel(served.address) as channel:
            await skill_service_pb2_grpc.SkillServiceStub(channel).CreateSkillDefinition(
                skill_service_pb2.CreateSkillDefinitionRequest(
                    definition=resources_pb2.SkillDefinition(skill_id="exported")
                ),
                metadata=(("traceparent", f"00-{TRACE_ID}-{free_port():016x}-01"),),
            )
        assert await served.terminate() == 0  # the provider flushes on the way out
        spans = {
            (span.name, span.trace_id.hex()): resource_spans.resource
            for request in sink.requests
            for resource_spans in request.resource_spans
            for scope in resource_spans.scope_spans
            for span in scope.spans
        }
        resource = spans[("/skillsvc.v1.SkillService/CreateSkillDefinition", TRACE_ID)]
        attributes = {a.key: a.value.string_value for a in resource.attributes}
        assert attributes["service.name"] == "skillsvc-under-test"
    finally:
        await server.stop(0)
