"""skillsvc-client: a typed Python client for skillsvc, and the ``skillctl`` command.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) have the same methods;
:class:`Connection` says where the server is and how to authenticate. Errors are the
:class:`SkillsvcError` tree (see :mod:`skillsvc_client._errors`); the protobuf messages
of the ``skillsvc.v1`` contract are in :mod:`skillsvc_client.v1`.

Importing this package never imports the server (the ``skillsvc`` package): the
generated stubs ship here as ``skillsvc_client.v1``.
"""

from __future__ import annotations

from skillsvc_client._aio import AsyncClient, AsyncInstall
from skillsvc_client._common import CHUNK_SIZE, Connection, RetryPolicy, Source
from skillsvc_client._errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InstallFailed,
    InvalidArgument,
    LocalError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    SkillsvcError,
    Unavailable,
    describe,
)
from skillsvc_client._files import IntegrityError
from skillsvc_client._pack import IGNORED_NAMES, Package, pack_folder
from skillsvc_client._sync import Client, Install

__all__ = [
    "CHUNK_SIZE",
    "IGNORED_NAMES",
    "AlreadyExists",
    "AsyncClient",
    "AsyncInstall",
    "Client",
    "Connection",
    "FailedPrecondition",
    "FieldViolation",
    "Install",
    "InstallFailed",
    "IntegrityError",
    "InvalidArgument",
    "LocalError",
    "NotFound",
    "OutOfRange",
    "Package",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "SkillsvcError",
    "Source",
    "Unavailable",
    "describe",
    "pack_folder",
]
