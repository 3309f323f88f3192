"""Service settings: one frozen dataclass, read from ``SKILLSVC_*`` variables once.

Nothing else in the package reads ``os.environ``; the composition root builds a
:class:`Settings` and passes it down. Each field's metadata names its variable and
documents it, so the README's configuration table and the validation messages come
from one source (``skillsvc config`` prints the table).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


class ConfigError(ValueError):
    """A ``SKILLSVC_*`` variable has a value the service cannot use."""


def _setting(env: str, default: Any, doc: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc}, **kwargs)


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
    database_url: str | None = _setting(
        "SKILLSVC_DATABASE_URL",
        None,
        "PostgreSQL (14+) URL, e.g. `postgresql://user@host/db`. Unset: an embedded "
        "PostgreSQL under `<data dir>/postgres`, started and stopped with the service.",
    )
    """External PostgreSQL; ``None`` starts the embedded one."""
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
    max_files: int = _setting("SKILLSVC_MAX_FILES", 10_000, "Most files a package may contain.")
    """File count limit (``TOO_MANY_FILES``)."""
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
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError("SKILLSVC_DATABASE_URL: must start with postgresql:// or postgres://")
        positive = (
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
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env_name(name)}: must be greater than 0")
        for name in ("shutdown_grace_seconds", "url_max_redirects"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_env_name(name)}: must not be negative")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("SKILLSVC_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")


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
        what = {int: "an integer", float: "a number"}.get(kind, "a valid value")  # type: ignore[call-overload]
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
    "database_url": str,
    "db_pool_size": int,
    "metrics_addr": str,
    "shutdown_grace_seconds": float,
    "health_interval_seconds": float,
    "log_level": str,
    "max_package_bytes": int,
    "max_unpacked_bytes": int,
    "max_files": int,
    "max_file_bytes": int,
    "max_concurrent_installs": int,
    "max_queued_installs": int,
    "heartbeat_seconds": float,
    "url_allow_private": bool,
    "url_timeout_seconds": float,
    "url_max_redirects": int,
}


def config_table() -> str:
    """The configuration table of the README, in Markdown."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        if f.default is None:
            default = "(unset)"
        elif isinstance(f.default, bool):
            default = f"`{str(f.default).lower()}`"
        else:
            default = f"`{f.default}`"
        rows.append(f"| `{f.metadata['env']}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)
