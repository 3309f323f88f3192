"""Traces: the RPC span continues the caller's trace; install stages are its children."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from skillsvc.tracing import TracingConfigError, configure_tracing, exporter_names
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status
from tests.install.conftest import ArchiveServer, install_url, upload_messages, upload_spec
from tests.packages import skill_archive

Stub = skill_service_pb2_grpc.SkillServiceStub

_EXPORTER = InMemorySpanExporter()
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
DONE = resources_pb2.INSTALL_STAGE_DONE
# The stages an upload install reports (the digest is checked while receiving;
# extraction validates; the commit activates).
STAGES = [
    "install receiving",
    "install queued",
    "install extracting",
    "install committing",
]


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    # The global provider can be set once per process; this module owns it.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


async def _create(stub: Stub, skill_id: str) -> None:
    await stub.CreateSkillDefinition(
        skill_service_pb2.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id=skill_id)
        )
    )


async def _follow(stub: Stub, operation_id: str) -> list[Any]:
    call = stub.InstallProgress(skill_service_pb2.InstallProgressRequest(operation_id=operation_id))
    return [event async for event in call]


def _of_trace(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.context is not None and s.context.trace_id == int(TRACE_ID, 16)
    ]


async def test_install_span_continues_the_callers_trace_with_a_child_per_stage(
    spans: InMemorySpanExporter, stub: Stub
) -> None:
    spans.clear()
    await _create(stub, "traced")
    data = skill_archive("traced", "1.0.0")
    op = await stub.Install(
        upload_messages(upload_spec("traced", data), data), metadata=TRACEPARENT
    )
    events = await _follow(stub, op.operation_id)
    assert events[-1].stage == resources_pb2.INSTALL_STAGE_DONE
    # The install's spans end once its commit has returned, just after DONE is sent.
    async with asyncio.timeout(10):
        while STAGES[-1] not in {s.name for s in _of_trace(spans)}:
            await asyncio.sleep(0.01)
    mine = _of_trace(spans)
    (rpc,) = [s for s in mine if s.name == "/skillsvc.v1.SkillService/Install"]
    assert rpc.kind is trace.SpanKind.SERVER
    assert rpc.parent is not None and rpc.parent.span_id == int(PARENT_ID, 16)
    assert rpc.parent.is_remote
    assert rpc.context is not None
    stages = sorted(
        (s for s in mine if s.name.startswith("install ")), key=lambda s: s.start_time or 0
    )
    assert [s.name for s in stages] == STAGES
    for stage in stages:
        assert stage.parent is not None and stage.parent.span_id == rpc.context.span_id
        assert stage.attributes is not None
        assert stage.attributes["skillsvc.operation_id"] == op.operation_id
        assert stage.status.is_unset
    # Stages run in the background after the RPC returned, one after the other.
    assert (stages[-1].start_time or 0) > (rpc.end_time or 0)
    for earlier, later in itertools.pairwise(stages):
        assert (earlier.end_time or 0) <= (later.start_time or 0)
    # The progress watcher sent no traceparent: its span is a trace of its own.
    watcher = [s for s in spans.get_finished_spans() if s.name.endswith("/InstallProgress")]
    assert watcher and all(s.context.trace_id != int(TRACE_ID, 16) for s in watcher if s.context)


async def test_a_failed_stage_carries_the_error(spans: InMemorySpanExporter, stub: Stub) -> None:
    spans.clear()
    await _create(stub, "broken")
    data = b"this is no archive"
    op = await stub.Install(
        upload_messages(upload_spec("broken", data, version="1.0.0"), data), metadata=TRACEPARENT
    )
    events = await _follow(stub, op.operation_id)
    assert events[-1].stage == resources_pb2.INSTALL_STAGE_FAILED
    stages = [s for s in _of_trace(spans) if s.name.startswith("install ")]
    failed = [s for s in stages if not s.status.is_ok]
    assert len(failed) == 1
    assert "INVALID_ARGUMENT" in (failed[0].status.description or "")
    assert stages[-1] is failed[0] or max(stages, key=lambda s: s.end_time or 0) is failed[0]


async def test_a_refused_rpc_span_has_its_code(spans: InMemorySpanExporter, stub: Stub) -> None:
    spans.clear()
    await expect_status(
        stub.GetSkillDefinition(
            skill_service_pb2.GetSkillDefinitionRequest(skill_id="nope"), metadata=TRACEPARENT
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    # The server ends its span just after the status is sent.
    async with asyncio.timeout(10):
        while not _of_trace(spans):
            await asyncio.sleep(0.01)
    (span,) = _of_trace(spans)
    assert span.attributes is not None
    assert span.attributes["rpc.method"] == "GetSkillDefinition"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # OpenTelemetry's gRPC conventions: NOT_FOUND is the caller's problem, not a
    # server error, so the server span's status stays unset.
    assert span.status.is_unset


async def test_streaming_calls_never_fail_to_detach_context(
    spans: InMemorySpanExporter, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Server streams ended every way: no "Failed to detach context", no crash.

    Downloads cancelled while the server is still sending and downloads past their
    deadline are the calls grpc.aio stops iterating without closing the response
    generator (this failed before the stream-closing interceptor); a watcher
    cancelled while the server waits, a stream read to its end and health's Watch
    (written in the ``context.write`` style) are the other shapes.
    """
    caplog.set_level(logging.DEBUG)
    app = await make_app(url_allow_private=True)
    archives = ArchiveServer()
    await archives.start()
    archives.gate.clear()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = Stub(channel)
            await _create(stub, "streamed")
            data = skill_archive(
                "streamed", "1.0.0", fmt="tar", extra={"assets/blob.bin": os.urandom(24 << 20)}
            )
            op = await stub.Install(upload_messages(upload_spec("streamed", data), data))
            assert (await _follow(stub, op.operation_id))[-1].stage == DONE
            request = skill_service_pb2.DownloadPackageRequest(skill_id="streamed", version="1.0.0")
            for _ in range(3):
                download = stub.DownloadPackage(request, metadata=TRACEPARENT)
                await download.read()
                await download.read()
                download.cancel()
            for _ in range(2):  # the client stops reading; the deadline passes mid-stream
                download = stub.DownloadPackage(request, timeout=0.5)
                await download.read()
                assert await download.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            archives.files["/s.tgz"] = skill_archive("streamed", "1.0.1")
            held = await install_url(stub, "streamed", archives.url("/s.tgz"))
            for _ in range(3):  # cancelled while the server waits for the next change
                call = stub.InstallProgress(
                    skill_service_pb2.InstallProgressRequest(operation_id=held.operation_id),
                    metadata=TRACEPARENT,
                )
                await call.read()
                call.cancel()
            archives.gate.set()
            assert (await _follow(stub, held.operation_id))[-1].stage == DONE
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
    finally:
        await archives.stop()
    await app.stop(0)
    # Abandoned generators are finalised by the event loop in tasks of their own.
    for _ in range(5):
        gc.collect()
        await asyncio.sleep(0.05)
    assert "Failed to detach context" not in caplog.text
    assert [s for s in _of_trace(spans) if s.name.endswith("/DownloadPackage")]
    # Each download has its access line with the code the client saw.
    codes = sorted(
        getattr(r, "grpc_code", "")
        for r in caplog.records
        if r.name == "skillsvc.access" and "DownloadPackage" in r.getMessage()
    )
    # A server that got every byte into the transport's windows before the client gave
    # up has served the call (OK), whatever the client saw; the rest end as the client
    # ended them, and at least one was cut off mid-stream (the generator-closing path).
    assert len(codes) == 5, codes
    assert set(codes) <= {"CANCELLED", "DEADLINE_EXCEEDED", "OK"}, codes
    assert set(codes) - {"OK"}, codes


def test_exporters_follow_the_standard_variables() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == ["otlp_proto_grpc"]
    assert exporter_names(
        {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    ) == ["otlp_proto_http", "console"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) == []
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "none"}) is None
    with pytest.raises(TracingConfigError, match="no span exporter 'zipkin'"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingConfigError, match="grpc or http/protobuf"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "x"})
