"""A span and a log line for every stage an install goes through.

:func:`begin_install` is called when an install is accepted, inside the RPC that
accepted it (Install or Retry): it remembers the current trace context (the RPC's server
span) and binds the operation to this task's log lines. The install's background task
is created from that task, so it inherits both through context variables, and every
later :func:`enter_stage` starts its span as a child of the RPC's span even though the
RPC has long returned. Spans are never made current: a stage may begin in the RPC's
task (RECEIVING, QUEUED) and end in the background task, and an attached context must
be detached in the task that attached it.

Span names are ``install <stage>`` (``install verifying``…), with
``skillsvc.operation_id``, ``skillsvc.skill_id`` and ``skillsvc.stage``; the last
stage of a failed install carries the error status.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from skillsvc.core.models import Operation, OperationError, Stage
from skillsvc.logs import bind_operation

logger = logging.getLogger("skillsvc.install")

_TRACER_NAME: Final = "skillsvc.install"


class InstallTrace:
    """The stage spans of one install, parented on the RPC that accepted it."""

    def __init__(self, op: Operation) -> None:
        self._parent = otel_context.get_current()
        self._operation_id = op.operation_id
        self._skill_id = op.skill_id
        self._stage: Stage | None = None
        self._span: Span | None = None

    def enter(self, stage: Stage, message: str) -> None:
        """The install moved to ``stage``: end the previous stage's span, start its own."""
        if stage is self._stage:
            return
        self._end(None)
        self._stage = stage
        self._span = trace.get_tracer(_TRACER_NAME).start_span(
            f"install {stage.value.lower()}",
            context=self._parent,
            attributes={
                "skillsvc.operation_id": self._operation_id,
                "skillsvc.skill_id": self._skill_id,
                "skillsvc.stage": stage.value,
            },
        )
        logger.info("stage %s: %s", stage.value, message, extra={"stage": stage.value})

    def finish(self, error: OperationError | None, message: str) -> None:
        """The install ended: close the last stage's span and log the outcome."""
        self._end(error)
        if error is None:
            logger.info("stage DONE: %s", message, extra={"stage": Stage.DONE.value})
        else:
            logger.warning(
                "stage FAILED: %s %s: %s",
                error.code,
                error.reason,
                error.message,
                extra={"stage": Stage.FAILED.value, "error_code": error.code},
            )
        self._stage = None

    def _end(self, error: OperationError | None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{error.code}: {error.message}"))
            span.set_attribute("skillsvc.error_reason", error.reason)
        span.end()


_CURRENT: contextvars.ContextVar[InstallTrace | None] = contextvars.ContextVar(
    "skillsvc_install_trace", default=None
)


def begin_install(op: Operation) -> InstallTrace:
    """Start tracing ``op`` from this task (and the tasks it creates), at its stage."""
    bind_operation(op.operation_id, op.skill_id)
    install = InstallTrace(op)
    _CURRENT.set(install)
    install.enter(op.stage, op.message or op.stage.value.lower())
    return install


def enter_stage(stage: Stage, message: str) -> None:
    """The install traced by this task moved to ``stage``."""
    install = _CURRENT.get()
    if install is not None:
        install.enter(stage, message)


def finish_install(error: OperationError | None, message: str = "") -> None:
    """The install traced by this task ended (``error`` None: it succeeded)."""
    install = _CURRENT.get()
    if install is not None:
        install.finish(error, message)
