"""Logs: JSON lines with their trace and operation, an access line per RPC, no secrets."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from typing import Any

import grpc
import jwt
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from skillsvc.logs import ContextFilter, JsonFormatter, TextFormatter, bind_operation
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import expect_status
from tests.install.conftest import upload_messages, upload_spec
from tests.observability.conftest import SECRET, mint
from tests.packages import skill_archive

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")
# grpc's C core writes its own lines (``I1130 00:06:56.901849 ...``) straight to stderr.
_C_CORE = re.compile(r"^[DIWEF]\d{4} ")


async def test_json_lines_carry_trace_operation_and_never_the_token(  # type: ignore[no-untyped-def]
    serve, db_url: str
) -> None:
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_LOG_FORMAT="json",
        SKILLSVC_LOG_LEVEL="DEBUG",
        SKILLSVC_AUTH="jwt",
        SKILLSVC_JWT_SECRET=SECRET,
    )
    await served.wait_serving()
    token = mint("root@platform")
    forged = jwt.encode({"sub": "mallory", "exp": 4102444800}, "x" * 40, "HS256")
    admin = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await stub.CreateSkillDefinition(
            skill_service_pb2.CreateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(skill_id="logged")
            ),
            metadata=admin,
        )
        data = skill_archive("logged", "1.0.0")
        op = await stub.Install(
            upload_messages(upload_spec("logged", data), data), metadata=(*admin, TRACEPARENT)
        )
        progress = stub.InstallProgress(
            skill_service_pb2.InstallProgressRequest(operation_id=op.operation_id), metadata=admin
        )
        assert [e async for e in progress][-1].stage == resources_pb2.INSTALL_STAGE_DONE
        await expect_status(
            stub.GetSkillDefinition(
                skill_service_pb2.GetSkillDefinitionRequest(skill_id="logged"),
                metadata=(("authorization", f"Bearer {forged}"),),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    assert await served.terminate() == 0
    text = served.log.read_text()
    for secret in (token, forged, SECRET, token.split(".")[2]):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if not _C_CORE.match(line)]
    assert len(lines) > 10
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert line["time"].endswith("+00:00")

    access = [line for line in lines if line["logger"] == "skillsvc.access"]
    (install,) = [a for a in access if a["grpc_method"] == "/skillsvc.v1.SkillService/Install"]
    assert install["grpc_code"] == "OK"
    assert install["subject"] == "root@platform"
    assert install["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert isinstance(install["duration_ms"], float)
    assert install["trace_id"] == TRACE_ID
    assert install["operation_id"] == op.operation_id
    assert install["skill_id"] == "logged"
    (refused,) = [a for a in access if a["grpc_code"] == "UNAUTHENTICATED"]
    assert refused["grpc_method"] == "/skillsvc.v1.SkillService/GetSkillDefinition"
    assert refused["subject"] == "-"
    assert "trace_id" not in refused  # the caller sent no trace context
    methods = {a["grpc_method"].rsplit("/", 1)[1] for a in access}
    assert {"CreateSkillDefinition", "Install", "InstallProgress", "GetSkillDefinition"} <= methods

    stages = [line for line in lines if line["logger"] == "skillsvc.install"]
    assert [s["stage"] for s in stages] == [
        "RECEIVING",
        "QUEUED",
        "EXTRACTING",
        "COMMITTING",
        "DONE",
    ]
    for stage in stages:
        assert stage["operation_id"] == op.operation_id
        assert stage["skill_id"] == "logged"
        assert stage["trace_id"] == TRACE_ID  # the background task continues the trace


def _record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("skillsvc.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    ContextFilter().filter(record)
    return record


def test_text_lines_carry_the_trace_id_and_secrets_are_redacted() -> None:
    context = SpanContext(int(TRACE_ID, 16), 0x00F067AA0BA902B7, False, TraceFlags(1))
    token = mint()
    with trace.use_span(NonRecordingSpan(context)):
        record = _record("header was %s", f"Bearer {token}")
    line = TextFormatter().format(record)
    assert line.endswith(f"[trace_id={TRACE_ID}]")
    assert token not in line and "[REDACTED]" in line
    entry = json.loads(JsonFormatter().format(record))
    assert entry["trace_id"] == TRACE_ID and entry["span_id"] == "00f067aa0ba902b7"
    assert token not in entry["message"]


def test_bound_operation_is_on_every_later_line_of_the_task() -> None:
    import contextvars

    def work() -> dict[str, Any]:
        bind_operation("op-1", "pdf-tools")
        return dict(json.loads(JsonFormatter().format(_record("hello", stage="QUEUED"))))

    entry = contextvars.copy_context().run(work)
    assert entry["operation_id"] == "op-1"
    assert entry["skill_id"] == "pdf-tools"
    assert entry["stage"] == "QUEUED"
    outside = json.loads(JsonFormatter().format(_record("elsewhere")))
    assert "operation_id" not in outside and "trace_id" not in outside


def test_records_skip_caller_thread_and_process_lookups() -> None:
    """Neither format shows them; finding them was a fifth of each access line's cost."""
    code = (
        "import logging, sys\n"
        "from skillsvc.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "seen = []\n"
        "class Keep(logging.Handler):\n"
        "    def emit(self, record): seen.append(record)\n"
        "logging.getLogger().addHandler(Keep())\n"
        "logging.getLogger('skillsvc.access').info('x')\n"
        "r = seen[0]\n"
        "print(r.lineno, r.thread, r.process, r.processName)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["0", "None", "None", "None"]
