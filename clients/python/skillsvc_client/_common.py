"""What the sync and asyncio clients share: connection settings, retries, requests.

Only the I/O differs between :class:`~skillsvc_client.Client` and
:class:`~skillsvc_client.AsyncClient`; everything that decides what to send lives here.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from skillsvc_client import _pack
from skillsvc_client._errors import LocalError
from skillsvc_client.v1 import resources_pb2, skill_service_pb2

CHUNK_SIZE: Final = 1 << 20
"""Upload chunk size: 1 MiB, the server's spooling batch."""
DEFAULT_ADDRESS: Final = "127.0.0.1:50051"
PAGE_SIZE: Final = 100

Source = str | os.PathLike[str] | bytes
"""What :meth:`install` and :meth:`validate` take: a folder, an archive file, archive
bytes, or an ``http(s)://`` URL the server downloads itself."""

TERMINAL_STAGES: Final = frozenset(
    {resources_pb2.INSTALL_STAGE_DONE, resources_pb2.INSTALL_STAGE_FAILED}
)
TERMINAL_STATES: Final = frozenset(
    {
        resources_pb2.OPERATION_STATE_SUCCEEDED,
        resources_pb2.OPERATION_STATE_FAILED,
        resources_pb2.OPERATION_STATE_CANCELLED,
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for calls that failed with ``UNAVAILABLE``.

    Only calls that are safe to repeat are retried: reads, ``Validate``, and installs,
    which carry a ``request_id`` so the server answers a repeat with the first
    operation instead of starting a second one.
    """

    attempts: int = 5
    """Tries in all, the first included."""
    initial_backoff: float = 0.2
    """Seconds before the second try."""
    max_backoff: float = 5.0
    """Upper bound of one wait."""
    multiplier: float = 2.0
    """Growth of the wait per try."""

    def delays(self) -> Iterator[float]:
        """The waits between tries (one fewer than :attr:`attempts`)."""
        delay = self.initial_backoff
        for _ in range(self.attempts - 1):
            yield random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not secrets
            delay = min(delay * self.multiplier, self.max_backoff)


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to talk to it."""

    address: str = DEFAULT_ADDRESS
    """``host:port`` of the server."""
    token: str | None = None
    """Bearer token sent in ``authorization`` (servers with ``SKILLSVC_AUTH=jwt``)."""
    tls: bool = False
    """Use TLS (implied by any of the files below); the system roots when no CA is given."""
    ca_file: Path | None = None
    """PEM CA bundle that signed the server's certificate."""
    cert_file: Path | None = None
    """PEM client certificate, for mutual TLS."""
    key_file: Path | None = None
    """PEM private key of :attr:`cert_file`."""
    server_name: str | None = None
    """Name to check the server's certificate against, if not the address's host."""
    timeout: float = 30.0
    """Deadline of every unary call, in seconds."""
    transfer_timeout: float = 600.0
    """Deadline of uploads, downloads and progress streams, in seconds."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Backoff for ``UNAVAILABLE``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Connection:
        """Settings from ``SKILLSVC_ADDR``, ``SKILLSVC_TOKEN``, ``SKILLSVC_CA``,
        ``SKILLSVC_CERT`` and ``SKILLSVC_KEY``; ``overrides`` that are not None win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "address": env.get("SKILLSVC_ADDR") or DEFAULT_ADDRESS,
            "token": env.get("SKILLSVC_TOKEN") or None,
            "ca_file": _path(env.get("SKILLSVC_CA")),
            "cert_file": _path(env.get("SKILLSVC_CERT")),
            "key_file": _path(env.get("SKILLSVC_KEY")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def secure(self) -> bool:
        """Whether the channel uses TLS."""
        return self.tls or any((self.ca_file, self.cert_file, self.key_file))

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials from the configured files (read now, so errors come early)."""
        if (self.cert_file is None) != (self.key_file is None):
            raise LocalError("mutual TLS needs both a client certificate and its key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )

    def channel_options(self) -> list[tuple[str, object]]:
        """gRPC channel arguments."""
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", 8 * CHUNK_SIZE),
            ("grpc.primary_user_agent", "skillsvc-client"),
            # gRPC's own reconnect backoff (up to 120 s by default) would make every retry
            # of ours fail fast while it waits; keep it within the retry policy's pace.
            ("grpc.initial_reconnect_backoff_ms", int(self.retry.initial_backoff * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(self.retry.initial_backoff * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(self.retry.max_backoff * 1000)),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the bearer token, if any."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LocalError(f"{path}: {exc.strerror or exc}") from None


def is_url(source: Source) -> bool:
    """Whether ``source`` is a URL for the server to download."""
    return isinstance(source, str) and source.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Prepared:
    """An install or validation request's spec fields and the bytes to upload."""

    skill_id: str
    version: str
    url: str
    package: _pack.Package | None

    @property
    def size(self) -> int:
        """Bytes to upload (0 for a URL)."""
        return 0 if self.package is None else len(self.package.data)


class InstallState:
    """What an install knows in both client flavours: its package, key and operation."""

    def __init__(self, prepared: Prepared, activate: bool, request_id: str) -> None:
        self._prepared = prepared
        self._activate = activate
        self.request_id = request_id
        """The idempotency key sent with every attempt of this install."""
        self.operation: resources_pb2.Operation | None = None
        """The operation, once the server accepted the upload."""

    @property
    def sha256(self) -> str:
        """The digest of the uploaded archive (``""`` for a URL)."""
        return self._prepared.package.sha256 if self._prepared.package else ""

    @property
    def package(self) -> _pack.Package | None:
        """The archive being uploaded and what its SKILL.md says (None for a URL)."""
        return self._prepared.package

    @property
    def skill_id(self) -> str:
        """The skill the package is installed under."""
        return self._prepared.skill_id


def prepare(
    source: Source, skill: str | None, version: str | None, *, need_skill: bool
) -> Prepared:
    """Load or pack ``source`` and settle the skill id (SKILL.md's name by default)."""
    if is_url(source):
        assert isinstance(source, str)
        if need_skill and not skill:
            raise LocalError("a URL source needs the skill id (skill=... / --skill)")
        return Prepared(skill or "", version or "", source, None)
    package = _pack.load(source)
    # Validation checks the package's own name; an id taken from it would only turn a
    # bad name into a request error instead of a NAME_INVALID violation in the report.
    skill_id = skill or (package.name if need_skill else "")
    if need_skill and not skill_id:
        raise LocalError("no skill id: SKILL.md has no name; give skill=... / --skill")
    return Prepared(skill_id, version or "", "", package)


def install_requests(
    prepared: Prepared, *, activate: bool, request_id: str
) -> tuple[skill_service_pb2.InstallRequest, list[bytes]]:
    """The first ``InstallRequest`` (the spec) and the chunks that follow it."""
    spec = skill_service_pb2.InstallSpec(
        skill_id=prepared.skill_id,
        version=prepared.version,
        activate=activate,
        request_id=request_id,
    )
    if prepared.package is None:
        spec.url = prepared.url
        return skill_service_pb2.InstallRequest(spec=spec), []
    spec.upload.size_bytes = prepared.size
    spec.sha256 = prepared.package.sha256
    return skill_service_pb2.InstallRequest(spec=spec), chunks(prepared.package.data)


def validate_requests(
    prepared: Prepared,
) -> tuple[skill_service_pb2.ValidateRequest, list[bytes]]:
    """The first ``ValidateRequest`` (the spec) and the chunks that follow it."""
    spec = skill_service_pb2.ValidateSpec(skill_id=prepared.skill_id, version=prepared.version)
    if prepared.package is None:
        spec.url = prepared.url
        return skill_service_pb2.ValidateRequest(spec=spec), []
    spec.upload.size_bytes = prepared.size
    spec.sha256 = prepared.package.sha256
    return skill_service_pb2.ValidateRequest(spec=spec), chunks(prepared.package.data)


def chunks(data: bytes) -> list[bytes]:
    """``data`` cut into :data:`CHUNK_SIZE` pieces (views would not save a copy: protobuf
    copies bytes fields anyway)."""
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def new_request_id() -> str:
    """A fresh idempotency key for one install (kept across its retries)."""
    return str(uuid.uuid4())


def upload_event(done: int, total: int) -> resources_pb2.InstallEvent:
    """A client-side progress event for bytes sent (the operation id is not known yet)."""
    event = resources_pb2.InstallEvent(
        stage=resources_pb2.INSTALL_STAGE_RECEIVING,
        state=resources_pb2.OPERATION_STATE_RUNNING,
        bytes_done=done,
        bytes_total=total,
        message="uploading",
    )
    event.time.GetCurrentTime()
    return event


def operation_event(op: resources_pb2.Operation) -> resources_pb2.InstallEvent:
    """The event describing an operation's current state."""
    return resources_pb2.InstallEvent(
        operation_id=op.operation_id,
        stage=op.stage,
        state=op.state,
        bytes_done=op.bytes_done,
        bytes_total=op.bytes_total,
        message="accepted",
        time=op.update_time if op.HasField("update_time") else timestamp_pb2.Timestamp(),
        error=op.error,
    )


def is_terminal(event: resources_pb2.InstallEvent) -> bool:
    """Whether ``event`` is the last one of its operation."""
    return event.stage in TERMINAL_STAGES or event.state in TERMINAL_STATES


def definition_update(
    skill_id: str,
    *,
    display_name: str | None = None,
    description: str | None = None,
    active: bool | None = None,
    public: bool | None = None,
) -> skill_service_pb2.UpdateSkillDefinitionRequest:
    """An update request changing exactly the fields given (the mask lists them)."""
    definition = resources_pb2.SkillDefinition(skill_id=skill_id)
    paths = []
    if display_name is not None:
        definition.display_name = display_name
        paths.append("display_name")
    if description is not None:
        definition.description = description
        paths.append("description")
    if active is not None:
        definition.active = active
        paths.append("active")
    if public is not None:
        definition.public = public
        paths.append("public")
    if not paths:
        raise LocalError("nothing to update: give at least one field")
    return skill_service_pb2.UpdateSkillDefinitionRequest(
        definition=definition, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


def watch_request(
    skill_ids: Sequence[str], since: int | None
) -> skill_service_pb2.WatchSkillsRequest:
    """A WatchSkills request; ``since`` None leaves the field unset (from now)."""
    request = skill_service_pb2.WatchSkillsRequest(skill_ids=skill_ids)
    if since is not None:
        request.since = since
    return request
