"""Service settings: one frozen dataclass, read from ``SKILLSVC_*`` variables once.

Nothing else in the package reads ``os.environ``; the composition root builds a
:class:`Settings` and passes it down. Each field's metadata names its variable and
documents it, so the README's configuration table and the validation messages come
from one source (``skillsvc config`` prints the table).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024

AUTH_MODES = ("none", "jwt")
"""The values of ``SKILLSVC_AUTH``."""
MIN_SECRET_BYTES = 32
"""An HS256 secret must be at least as long as the SHA-256 output."""


class ConfigError(ValueError):
    """A ``SKILLSVC_*`` variable has a value the service cannot use."""


def _setting(
    env: str,
    default: Any,
    doc: str,
    *,
    display: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    metadata = {"env": env, "doc": doc, "display": display}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, so containers' cpusets count)."""
    return len(os.sched_getaffinity(0))


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d``; ValueError otherwise."""
    text = text.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:])
    number = float(text[:-1] if unit else text)
    if not math.isfinite(number) or number < 0:
        raise ValueError(text)
    return number * (unit or 1)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a skillsvc process."""

    listen_addr: str = _setting(
        "SKILLSVC_LISTEN_ADDR", "127.0.0.1:50051", "gRPC listen address, `host:port`."
    )
    """gRPC listen address."""
    data_dir: Path = _setting(
        "SKILLSVC_DATA_DIR",
        Path("skillsvc-data"),
        "Data directory: the file store and, without a database URL, the embedded PostgreSQL.",
    )
    """Root of everything the service keeps on disk."""
    store_dir: Path | None = _setting(
        "SKILLSVC_STORE_DIR", None, "File store root. Default `<data dir>/store`."
    )
    """File store root; ``None`` means ``data_dir / "store"``."""
    blob_store: str | None = _setting(
        "SKILLSVC_BLOB_STORE",
        None,
        "Where original archives and the kept bytes of failed uploads live. Unset: "
        "`blobs/` and `kept/` in the file store. `s3://bucket/prefix`: an S3-compatible "
        "bucket shared by every replica; endpoint and credentials the standard AWS way "
        "(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...).",
    )
    """``s3://bucket/prefix``, or ``None`` for local blobs under the store root."""
    blob_store_options: Mapping[str, str] = field(
        default_factory=dict, metadata={"env": None, "doc": "", "display": None}
    )
    """obstore ``S3Config`` keys that override the ``AWS_*`` environment (tests; no
    variable of its own). May hold a secret: never shown."""
    database_url: str | None = _setting(
        "SKILLSVC_DATABASE_URL",
        None,
        "PostgreSQL (14+) URL, e.g. `postgresql://user@host/db`. Unset: an embedded "
        "PostgreSQL under `<data dir>/postgres`, started and stopped with the service.",
    )
    """External PostgreSQL; ``None`` starts the embedded one."""
    workers: int = _setting(
        "SKILLSVC_WORKERS",
        None,
        "Worker processes sharing the listen address (SO_REUSEPORT) under one `serve` "
        "supervisor; `1` runs a single process.",
        display="the CPUs this process may use",
        factory=usable_cpus,
    )
    """Worker processes of ``serve``; 1 serves in the supervisor's own process."""
    db_pool_size: int = _setting(
        "SKILLSVC_DB_POOL_SIZE", 10, "Maximum PostgreSQL connections in the pool."
    )
    """Upper bound of the asyncpg pool."""
    metrics_addr: str = _setting(
        "SKILLSVC_METRICS_ADDR",
        "127.0.0.1:9464",
        "Prometheus metrics listen address, `host:port`; empty disables the endpoint.",
    )
    """Where ``/metrics`` is served; empty disables it."""
    shutdown_grace_seconds: float = _setting(
        "SKILLSVC_SHUTDOWN_GRACE_SECONDS",
        30.0,
        "On SIGTERM, how long running calls and installs may continue before the process exits.",
    )
    """Grace period on SIGTERM."""
    health_interval_seconds: float = _setting(
        "SKILLSVC_HEALTH_INTERVAL_SECONDS",
        2.0,
        "How often the database and the store are probed for the health service.",
    )
    """Period of the health probe."""
    log_level: str = _setting(
        "SKILLSVC_LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING or ERROR."
    )
    """Root log level."""
    log_format: str = _setting(
        "SKILLSVC_LOG_FORMAT",
        "text",
        "Log format: `text` (one human line per record) or `json` (one JSON object per "
        "line with `time`, `level`, `logger`, `message` and, where they apply, "
        "`operation_id`, `skill_id`, `trace_id`).",
    )
    """``text`` or ``json``."""
    max_package_bytes: int = _setting(
        "SKILLSVC_MAX_PACKAGE_BYTES", 100 * MiB, "Largest archive accepted, in bytes."
    )
    """Archive size limit (``TOO_LARGE``)."""
    max_unpacked_bytes: int = _setting(
        "SKILLSVC_MAX_UNPACKED_BYTES",
        512 * MiB,
        "Largest total size of a package's extracted files, in bytes.",
    )
    """Extracted size limit (``UNPACKED_TOO_LARGE``)."""
    max_files: int = _setting(
        "SKILLSVC_MAX_FILES", 10_000, "Most entries (files and directories) a package may hold."
    )
    """Entry count limit, directories included (``TOO_MANY_FILES``)."""
    max_file_bytes: int = _setting(
        "SKILLSVC_MAX_FILE_BYTES", 100 * MiB, "Largest single file in a package, in bytes."
    )
    """Single file size limit (``FILE_TOO_LARGE``)."""
    max_concurrent_installs: int = _setting(
        "SKILLSVC_MAX_CONCURRENT_INSTALLS",
        50,
        "Installs that run at once per process; more wait in the QUEUED stage.",
    )
    """Install concurrency."""
    archive_processes: int = _setting(
        "SKILLSVC_ARCHIVE_PROCESSES",
        1,
        "Processes per worker that read, hash and extract archives (spawned at start-up, "
        "about 50 MiB each), so that work does not hold the event loop's GIL; `0` runs it "
        "in threads.",
    )
    """Archive worker processes per serving process (0: threads)."""
    max_queued_installs: int = _setting(
        "SKILLSVC_MAX_QUEUED_INSTALLS",
        1000,
        "Installs that may wait for a slot; past this Install fails with RESOURCE_EXHAUSTED.",
    )
    """Install queue bound."""
    heartbeat_seconds: float = _setting(
        "SKILLSVC_HEARTBEAT_SECONDS",
        5.0,
        "How often a process records that it is alive. Operations of a process silent "
        "for three intervals are marked FAILED (ABORTED, interrupted) by the others.",
    )
    """Liveness period of this process."""
    failed_retention_seconds: float = _setting(
        "SKILLSVC_FAILED_RETENTION",
        7 * 24 * 3600.0,
        "How long the bytes of failed uploads (for Retry) and the log rows of failed "
        "operations are kept before `skillsvc gc` removes them: seconds, or a number "
        "with s, m, h or d.",
        display="7d",
    )
    """Retention of failed attempts' bytes and log rows."""
    watch_retention_seconds: float = _setting(
        "SKILLSVC_WATCH_RETENTION",
        7 * 24 * 3600.0,
        "How long the change log behind WatchSkills keeps events: a client resuming "
        "with a `since` older than this gets OUT_OF_RANGE and lists again. Seconds, or "
        "a number with s, m, h or d. Pruned by the running server. Quiet streams get a "
        "position marker every hour or quarter of this, whichever is shorter.",
        display="7d",
    )
    """Retention of the WatchSkills change log."""
    url_allow_private: bool = _setting(
        "SKILLSVC_URL_ALLOW_PRIVATE",
        False,
        "Allow URL sources that resolve to loopback, private or link-local addresses "
        "(tests, on-premises mirrors).",
    )
    """Disables the SSRF address check for URL sources."""
    url_timeout_seconds: float = _setting(
        "SKILLSVC_URL_TIMEOUT_SECONDS",
        120.0,
        "Total deadline for downloading a URL source, redirects included.",
    )
    """Deadline of a URL fetch."""
    url_max_redirects: int = _setting(
        "SKILLSVC_URL_MAX_REDIRECTS", 5, "Most redirects followed for a URL source."
    )
    """Redirect limit of a URL fetch."""
    # -- security (SPEC §7; the README's Security section) ----------------------------
    auth: str = _setting(
        "SKILLSVC_AUTH",
        "none",
        "`none`: every caller is a platform admin, allowed only when SKILLSVC_LISTEN_ADDR "
        "is a loopback address. `jwt`: every RPC but health and reflection needs "
        "`authorization: Bearer <token>`.",
    )
    """Authentication mode: ``none`` or ``jwt``."""
    jwt_secret: str | None = _setting(
        "SKILLSVC_JWT_SECRET",
        None,
        "HS256 secret (at least 32 bytes) that verifies tokens; `skillsvc token` signs with it.",
    )
    """HS256 verification secret (excluded from ``repr``)."""
    jwt_public_key_file: Path | None = _setting(
        "SKILLSVC_JWT_PUBLIC_KEY_FILE",
        None,
        "PEM public key that verifies RS256 (RSA, 2048+ bits) or ES256 (P-256) tokens, "
        "alongside any secrets and JWKS keys. Read at start-up only.",
    )
    """RS256/ES256 verification key."""
    jwt_secrets_file: Path | None = _setting(
        "SKILLSVC_JWT_SECRETS_FILE",
        None,
        "File of HS256 secrets, one per line (at least 32 bytes each; blank lines and "
        "`#` comments ignored). A token verifies if any of them (or SKILLSVC_JWT_SECRET) "
        "signed it. Re-read on SIGHUP, for rotating secrets without a restart.",
    )
    """Further HS256 verification secrets, re-read on SIGHUP."""
    jwt_jwks_file: Path | None = _setting(
        "SKILLSVC_JWT_JWKS_FILE",
        None,
        "JWKS document (RFC 7517) of verification keys (RSA 2048+ bits: RS256, P-256: "
        "ES256, `oct` 32+ bytes: HS256), each with a unique `kid`; a token's `kid` header "
        "picks the key. Re-read on SIGHUP.",
    )
    """Verification keys chosen by ``kid``, re-read on SIGHUP."""
    jwt_issuer: str | None = _setting(
        "SKILLSVC_JWT_ISSUER", None, "When set, tokens must carry this `iss`."
    )
    """Required ``iss``."""
    jwt_audience: str | None = _setting(
        "SKILLSVC_JWT_AUDIENCE",
        None,
        "When set, tokens must carry this `aud`; when unset, tokens with an `aud` are refused.",
    )
    """Required ``aud``."""
    jwt_leeway_seconds: float = _setting(
        "SKILLSVC_JWT_LEEWAY_SECONDS",
        30.0,
        "Clock skew tolerated when checking a token's `exp`, `nbf` and `iat`.",
    )
    """Clock-skew leeway of token times."""
    tls_cert_file: Path | None = _setting(
        "SKILLSVC_TLS_CERT_FILE",
        None,
        "PEM server certificate (chain). With SKILLSVC_TLS_KEY_FILE, gRPC is served over TLS.",
    )
    """Server certificate chain."""
    tls_key_file: Path | None = _setting(
        "SKILLSVC_TLS_KEY_FILE", None, "PEM private key (unencrypted) of the server certificate."
    )
    """Server private key."""
    tls_client_ca_file: Path | None = _setting(
        "SKILLSVC_TLS_CLIENT_CA_FILE",
        None,
        "PEM CA certificate(s). When set, clients must present a certificate it signed "
        "(mutual TLS).",
    )
    """Client CA of mutual TLS."""
    max_skills_per_tenant: int = _setting(
        "SKILLSVC_MAX_SKILLS_PER_TENANT",
        100,
        "Most skill definitions a tenant may own (platform definitions count as one "
        "tenant); past it CreateSkillDefinition fails with RESOURCE_EXHAUSTED.",
    )
    """Definition quota per tenant."""
    max_versions_per_skill: int = _setting(
        "SKILLSVC_MAX_VERSIONS_PER_SKILL",
        50,
        "Most package versions a skill may hold (FAILED ones do not count); past it a "
        "new version's install fails with RESOURCE_EXHAUSTED.",
    )
    """Version quota per skill."""
    read_cache_entries: int = _setting(
        "SKILLSVC_READ_CACHE_ENTRIES",
        10_000,
        "Most definitions and packages each worker keeps in its read cache "
        "(GetSkillDefinition, GetPackage; least recently used dropped first); 0 turns "
        "the cache off.",
    )
    """Size cap of the read cache (entries)."""
    read_cache_ttl_seconds: float = _setting(
        "SKILLSVC_READ_CACHE_TTL_SECONDS",
        60.0,
        "Longest a read-cache entry is served. Changes drop entries at once (NOTIFY); "
        "this only bounds staleness should the LISTEN connection die unnoticed.",
    )
    """Lifetime of a read-cache entry."""
    # -- gRPC transport (README, "Operations") ------------------------------------------
    max_message_bytes: int = _setting(
        "SKILLSVC_MAX_MESSAGE_BYTES",
        5 * MiB,
        "Largest gRPC message received or sent, in bytes (an upload chunk included); "
        "larger ones fail with RESOURCE_EXHAUSTED.",
    )
    """Per-message size limit in both directions."""
    max_concurrent_streams: int = _setting(
        "SKILLSVC_MAX_CONCURRENT_STREAMS",
        100,
        "Calls one client connection may have open at once (HTTP/2 "
        "SETTINGS_MAX_CONCURRENT_STREAMS); further calls wait in the client.",
    )
    """Concurrent streams per connection."""
    keepalive_seconds: float = _setting(
        "SKILLSVC_KEEPALIVE_SECONDS",
        60.0,
        "The server pings a connection after this long without activity, and closes "
        "it when no answer comes within SKILLSVC_KEEPALIVE_TIMEOUT_SECONDS.",
    )
    """Server keepalive ping period."""
    keepalive_timeout_seconds: float = _setting(
        "SKILLSVC_KEEPALIVE_TIMEOUT_SECONDS",
        20.0,
        "How long a keepalive ping may go unanswered before the connection is closed.",
    )
    """Server keepalive ping timeout."""
    keepalive_min_ping_seconds: float = _setting(
        "SKILLSVC_KEEPALIVE_MIN_PING_SECONDS",
        10.0,
        "Shortest interval between client keepalive pings the server tolerates (pings "
        "are allowed on idle connections too); a client pinging more often is sent "
        "GOAWAY (`too_many_pings`).",
    )
    """Client keepalive enforcement."""
    max_connection_age_seconds: float = _setting(
        "SKILLSVC_MAX_CONNECTION_AGE_SECONDS",
        600.0,
        "A connection older than this (±10 % jitter) is sent GOAWAY, so clients reconnect "
        "and spread over the replicas behind an L4 balancer; 0 keeps connections forever.",
    )
    """Connection age limit (0: none)."""
    max_connection_age_grace_seconds: float = _setting(
        "SKILLSVC_MAX_CONNECTION_AGE_GRACE_SECONDS",
        60.0,
        "After that GOAWAY, how long calls still open on the old connection may run "
        "before it is closed (long watches then resume with `since`).",
    )
    """Grace of the connection age limit."""

    def __repr__(self) -> str:
        # Keeps the JWT secret out of logs and tracebacks.
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            secret = f.name in ("jwt_secret", "blob_store_options")
            shown = "'<hidden>'" if secret and value else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    @property
    def store_root(self) -> Path:
        """The file store root, resolved."""
        return (self.store_dir or self.data_dir / "store").resolve()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SKILLSVC_*`` variables (``os.environ`` by default).

        ``overrides`` (field names) win over the environment; tests use them. Raises
        :class:`ConfigError` naming the first bad variable.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if f.name in overrides:
                values[f.name] = overrides.pop(f.name)
                continue
            if name is None:  # set only by the caller
                continue
            raw = env.get(name)
            if raw is None or (raw == "" and f.default is None):
                continue
            values[f.name] = _parse(name, raw, f.default, _FIELD_TYPES[f.name])
        if overrides:
            raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Reject combinations no process can run with, naming the variable."""
        _split_host_port("SKILLSVC_LISTEN_ADDR", self.listen_addr)
        if self.metrics_addr:
            _split_host_port("SKILLSVC_METRICS_ADDR", self.metrics_addr)
        if self.blob_store is not None:
            bucket = self.blob_store.removeprefix("s3://").partition("/")[0]
            if (
                not self.blob_store.startswith("s3://")
                or not bucket
                or any(c in self.blob_store for c in "?#")
            ):
                raise ConfigError(
                    "SKILLSVC_BLOB_STORE: expected s3://bucket or s3://bucket/prefix, got "
                    f"{self.blob_store!r}"
                )
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError("SKILLSVC_DATABASE_URL: must start with postgresql:// or postgres://")
        positive = (
            "workers",
            "db_pool_size",
            "max_package_bytes",
            "max_unpacked_bytes",
            "max_files",
            "max_file_bytes",
            "max_concurrent_installs",
            "max_queued_installs",
            "heartbeat_seconds",
            "health_interval_seconds",
            "url_timeout_seconds",
            "max_skills_per_tenant",
            "max_versions_per_skill",
            "max_message_bytes",
            "max_concurrent_streams",
            "keepalive_seconds",
            "keepalive_timeout_seconds",
            "read_cache_ttl_seconds",
            "watch_retention_seconds",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env_name(name)}: must be greater than 0")
        non_negative = (
            "shutdown_grace_seconds",
            "archive_processes",
            "url_max_redirects",
            "jwt_leeway_seconds",
            "read_cache_entries",
            "keepalive_min_ping_seconds",
            "max_connection_age_seconds",
            "max_connection_age_grace_seconds",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{_env_name(name)}: must not be negative")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("SKILLSVC_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")
        if self.log_format not in {"text", "json"}:
            raise ConfigError("SKILLSVC_LOG_FORMAT: must be text or json")
        self._check_security()

    def _check_security(self) -> None:
        # Values only: the key and certificate files are read and checked by the
        # composition root (``skillsvc.server.build_security``), which also stops the
        # process naming the variable, so this module needs neither jwt nor grpc.
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"SKILLSVC_AUTH: must be none or jwt, got {self.auth!r}")
        if self.auth == "none" and not is_loopback_address(self.listen_addr):
            raise ConfigError(
                "SKILLSVC_AUTH: none (every caller is an admin) is only allowed when "
                f"SKILLSVC_LISTEN_ADDR is a loopback address, not {self.listen_addr!r}; "
                "set SKILLSVC_AUTH=jwt with SKILLSVC_JWT_SECRET or "
                "SKILLSVC_JWT_PUBLIC_KEY_FILE, or listen on 127.0.0.1"
            )
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"SKILLSVC_JWT_SECRET: must be at least {MIN_SECRET_BYTES} bytes long, "
                f"got {len(self.jwt_secret.encode())}"
            )
        key_sources = (
            self.jwt_secret,
            self.jwt_secrets_file,
            self.jwt_public_key_file,
            self.jwt_jwks_file,
        )
        if self.auth == "jwt" and not any(key_sources):
            raise ConfigError(
                "SKILLSVC_AUTH: jwt needs SKILLSVC_JWT_SECRET or SKILLSVC_JWT_SECRETS_FILE "
                "(HS256), SKILLSVC_JWT_PUBLIC_KEY_FILE (RS256/ES256) or SKILLSVC_JWT_JWKS_FILE"
            )
        cert, key, ca = self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file
        if cert is None and key is None and ca is not None:
            raise ConfigError(
                "SKILLSVC_TLS_CLIENT_CA_FILE: mutual TLS also needs SKILLSVC_TLS_CERT_FILE "
                "and SKILLSVC_TLS_KEY_FILE"
            )
        if cert is None and key is not None:
            raise ConfigError("SKILLSVC_TLS_CERT_FILE: required with SKILLSVC_TLS_KEY_FILE")
        if key is None and cert is not None:
            raise ConfigError("SKILLSVC_TLS_KEY_FILE: required with SKILLSVC_TLS_CERT_FILE")


def _env_name(field_name: str) -> str:
    return str(_FIELDS[field_name].metadata["env"])


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _parse(name: str, raw: str, default: Any, kind: Callable[[str], Any]) -> Any:
    if kind is bool:
        return _parse_bool(name, raw)
    try:
        return kind(raw.strip())
    except ValueError:
        what = {int: "an integer", float: "a number", parse_duration: "a duration like 7d"}.get(
            kind,
            "a valid value",
        )
        raise ConfigError(f"{name}: expected {what}, got {raw!r}") from None


def _split_host_port(name: str, value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6), or raise naming the variable."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{name}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port_text)


def is_loopback_address(addr: str) -> bool:
    """True when ``host:port`` only accepts connections from this machine."""
    host, _ = _split_host_port("address", addr)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_FIELD_TYPES: dict[str, Callable[[str], Any]] = {
    "listen_addr": str,
    "data_dir": Path,
    "store_dir": Path,
    "blob_store": str,
    "database_url": str,
    "workers": int,
    "db_pool_size": int,
    "metrics_addr": str,
    "shutdown_grace_seconds": float,
    "health_interval_seconds": float,
    "log_level": str,
    "log_format": str,
    "max_package_bytes": int,
    "max_unpacked_bytes": int,
    "max_files": int,
    "max_file_bytes": int,
    "max_concurrent_installs": int,
    "archive_processes": int,
    "max_queued_installs": int,
    "heartbeat_seconds": float,
    "failed_retention_seconds": parse_duration,
    "watch_retention_seconds": parse_duration,
    "url_allow_private": bool,
    "url_timeout_seconds": float,
    "url_max_redirects": int,
    "auth": str,
    "jwt_secret": str,
    "jwt_public_key_file": Path,
    "jwt_secrets_file": Path,
    "jwt_jwks_file": Path,
    "jwt_issuer": str,
    "jwt_audience": str,
    "jwt_leeway_seconds": float,
    "tls_cert_file": Path,
    "tls_key_file": Path,
    "tls_client_ca_file": Path,
    "max_skills_per_tenant": int,
    "max_versions_per_skill": int,
    "read_cache_entries": int,
    "read_cache_ttl_seconds": float,
    "max_message_bytes": int,
    "max_concurrent_streams": int,
    "keepalive_seconds": float,
    "keepalive_timeout_seconds": float,
    "keepalive_min_ping_seconds": float,
    "max_connection_age_seconds": float,
    "max_connection_age_grace_seconds": float,
}


def config_table() -> str:
    """The configuration table of the README, in Markdown."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        if f.metadata["env"] is None:
            continue
        if f.metadata.get("display") and f.default is dataclasses.MISSING:
            default = str(f.metadata["display"])
        elif f.metadata.get("display"):
            default = f"`{f.metadata['display']}`"
        elif f.default is None:
            default = "(unset)"
        elif isinstance(f.default, bool):
            default = f"`{str(f.default).lower()}`"
        else:
            default = f"`{f.default}`"
        rows.append(f"| `{f.metadata['env']}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)
