"""The transport layer: the servicer and the interceptors."""

from skillsvc.api._auth import AuthInterceptor, current_caller
from skillsvc.api._errors import ErrorInterceptor, abort_with, to_status
from skillsvc.api._handlers import LayeredInterceptor
from skillsvc.api._metrics import MetricsInterceptor
from skillsvc.api._servicer import SkillService
from skillsvc.api._tracing import StreamClosingInterceptor, TracingInterceptor, tracing_interceptors

__all__ = [
    "AuthInterceptor",
    "ErrorInterceptor",
    "LayeredInterceptor",
    "MetricsInterceptor",
    "SkillService",
    "StreamClosingInterceptor",
    "TracingInterceptor",
    "abort_with",
    "current_caller",
    "to_status",
    "tracing_interceptors",
]
