"""OpenTelemetry spans for RPCs."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from skillsvc.api import configure_tracing
from skillsvc.v1 import skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    # The global provider can be set once per process; this module owns it.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


async def test_every_rpc_is_a_server_span_with_its_status(
    spans: InMemorySpanExporter, stub: skill_service_pb2_grpc.SkillServiceStub
) -> None:
    spans.clear()
    await expect_status(
        stub.GetSkillDefinition(skill_service_pb2.GetSkillDefinitionRequest(skill_id="nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    await stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest())
    finished = {s.name: s for s in spans.get_finished_spans()}
    missing = finished["skillsvc.v1.SkillService/GetSkillDefinition"]
    assert missing.kind is trace.SpanKind.SERVER
    assert missing.attributes is not None
    assert missing.attributes["rpc.method"] == "GetSkillDefinition"
    assert missing.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not missing.status.is_ok
    listed = finished["skillsvc.v1.SkillService/ListSkillDefinitions"]
    assert listed.attributes is not None
    assert listed.attributes["rpc.grpc.status_code"] == 0
    assert listed.status.is_unset


def test_configure_tracing_follows_otel_traces_exporter() -> None:
    assert configure_tracing({}) is False
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "none"}) is False
    with pytest.raises(ValueError, match="not built in"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "zipkin"})
