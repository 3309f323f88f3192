"""The transport layer: the servicer and the interceptors."""

from skillsvc.api._errors import ErrorInterceptor, abort_with, to_status
from skillsvc.api._metrics import MetricsInterceptor
from skillsvc.api._servicer import SkillService

__all__ = ["ErrorInterceptor", "MetricsInterceptor", "SkillService", "abort_with", "to_status"]
