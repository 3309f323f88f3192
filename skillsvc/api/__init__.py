"""The transport layer: the servicer and the interceptors."""

from skillsvc.api._auth import AuthInterceptor, current_caller
from skillsvc.api._errors import ErrorInterceptor, abort_with, to_status
from skillsvc.api._metrics import MetricsInterceptor
from skillsvc.api._servicer import SkillService

__all__ = [
    "AuthInterceptor",
    "ErrorInterceptor",
    "MetricsInterceptor",
    "SkillService",
    "abort_with",
    "current_caller",
    "to_status",
]
