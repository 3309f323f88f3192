"""The composition root: settings → database → store → domain → gRPC server.

:func:`build_server` wires everything and returns an :class:`App` that the CLI (and
the tests) start and stop. Health and reflection are registered here, with service
names taken from the descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from skillsvc.api import (
    AuthInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
    SkillService,
    TracingInterceptor,
)
from skillsvc.auth import build_authenticator
from skillsvc.config import Settings
from skillsvc.core.catalog import Catalog
from skillsvc.core.definitions import Definitions
from skillsvc.core.installs import Installer, InstallerSettings
from skillsvc.core.lifecycle import Lifecycle
from skillsvc.core.progress import ProgressHub
from skillsvc.db import PROGRESS_CHANNEL, Database, EmbeddedPostgres, Listener, connect
from skillsvc.errors import Unavailable
from skillsvc.intake import UrlPolicy
from skillsvc.loops import run_forever
from skillsvc.metrics import HEALTHY, STORE_FREE_BYTES, STORE_TOTAL_BYTES
from skillsvc.store import Store
from skillsvc.tls import load_server_tls, server_credentials
from skillsvc.v1 import skill_service_pb2, skill_service_pb2_grpc
from skillsvc.validation import Limits

logger = logging.getLogger(__name__)

SERVICE_NAME = skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Callable without a token (SPEC §7): probes and grpcurl's discovery.
PUBLIC_SERVICES = frozenset({HEALTH_SERVICE_NAME, reflection.SERVICE_NAME})

# Larger than gRPC's 4 MiB default so clients may send 4 MiB chunks plus framing.
MAX_MESSAGE_BYTES = 5 * 1024 * 1024


async def open_database(
    settings: Settings, *, run_migrations: bool = True
) -> tuple[Database, EmbeddedPostgres | None]:
    """Connect to ``SKILLSVC_DATABASE_URL``, or start the embedded server; migrate.

    ``run_migrations=False`` leaves the schema alone (``restore`` must find the target
    exactly as the operator left it when it refuses).
    """
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = await EmbeddedPostgres.start(settings.data_dir / "postgres")
        url = embedded.url
    try:
        db = await connect(url, pool_size=settings.db_pool_size, run_migrations=run_migrations)
    except BaseException:
        if embedded is not None:
            await embedded.stop()
        raise
    return db, embedded


@dataclass
class App:
    """A built server and everything it owns, in start/stop order."""

    settings: Settings
    """The settings it was built from."""
    db: Database
    """The connection pool."""
    embedded: EmbeddedPostgres | None
    """The embedded PostgreSQL, when no URL was configured."""
    store: Store
    """The file store."""
    server: grpc.aio.Server
    """The gRPC server."""
    health: health.aio.HealthServicer
    """The standard health service."""
    installer: Installer
    """The install pipeline."""
    hub: ProgressHub
    """Progress fan-out to watchers."""
    listener: Listener
    """The LISTEN connection feeding the hub."""
    port: int
    """The bound gRPC port (useful with port 0)."""
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _metrics_server: Any = None
    _healthy: bool | None = None

    @property
    def address(self) -> str:
        """``host:port`` clients can dial."""
        host = self.settings.listen_addr.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Recover, then serve RPCs and start probing health."""
        await self.listener.start()
        await self.installer.start()
        await self.server.start()
        await self.check_health()
        self._tasks.append(
            asyncio.create_task(
                run_forever(
                    "health probe",
                    self._probe,
                    interval=self.settings.health_interval_seconds,
                    log=logger,
                ),
                name="health-probe",
            )
        )
        if self.settings.metrics_addr:
            self._metrics_server = _start_metrics(self.settings.metrics_addr)
        logger.info("skillsvc serving on %s", self.address)

    async def check_health(self) -> bool:
        """Probe the database and the store once and publish the result.

        Any failure of the probe (not only the expected ones) means NOT_SERVING. The
        change is logged, not every probe: WARNING when it goes, INFO when it is back.
        """
        healthy = True
        cause = ""
        try:
            async with asyncio.timeout(max(1.0, self.settings.health_interval_seconds)):
                await self.db.repo.ping()
                await asyncio.to_thread(self.store.probe)
        except (Unavailable, TimeoutError) as exc:
            healthy, cause = False, str(exc) or type(exc).__name__
        except Exception as exc:
            logger.warning("health probe failed unexpectedly", exc_info=exc)
            healthy, cause = False, str(exc) or type(exc).__name__
        if healthy != self._healthy:
            if healthy:
                logger.info("health: SERVING (database and store answer)")
            else:
                logger.warning("health: NOT_SERVING: %s", cause)
        self._healthy = healthy
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if healthy
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        HEALTHY.set(1 if healthy else 0)
        return healthy

    async def _probe(self) -> None:
        await self.check_health()
        free, total = await asyncio.to_thread(self.store.space)
        STORE_FREE_BYTES.set(free)
        STORE_TOTAL_BYTES.set(total)

    async def stop(self, grace: float | None = None) -> None:
        """Go NOT_SERVING, refuse new calls, let running ones finish, release everything."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:
                    logger.warning("background task %s had failed", task.get_name(), exc_info=True)
        await self.health.enter_graceful_shutdown()
        # New calls are refused at once; calls in flight (uploads included) and the
        # installs running in the background share the same grace period. Each step
        # below runs even if an earlier one failed: shutdown is never cut short.
        results = await asyncio.gather(
            self.server.stop(grace), self.installer.stop(grace), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("stopping failed", exc_info=result)
        await self.listener.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        await self.db.close()
        if self.embedded is not None:
            await self.embedded.stop()
        logger.info("skillsvc stopped")


def _cannot_listen(addr: str, why: str, variable: str = "SKILLSVC_LISTEN_ADDR") -> Unavailable:
    return Unavailable(f"cannot listen on {addr} ({variable}): {why}", reason="LISTEN_FAILED")


def check_listen_address(addr: str, variable: str = "SKILLSVC_LISTEN_ADDR") -> None:
    """Raise ``Unavailable`` naming the cause unless ``addr`` can be listened on now.

    gRPC binds with SO_REUSEPORT, so a second ``skillsvc serve`` on a port another one
    already serves would silently share it, and any other bind failure comes back as
    a bare "Failed to bind". A bind without SO_REUSEPORT fails on any listener already
    there, with the system's reason (SO_REUSEADDR, as gRPC sets too, so connections
    of a just-stopped server in TIME_WAIT do not count). Port 0 needs no check.
    Checked before anything starts, so a taken address costs no database start-up.
    """
    host, _, port_text = addr.rpartition(":")
    host = host.strip("[]")
    if port_text == "0":
        return
    try:
        infos = socket.getaddrinfo(host or None, int(port_text), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise _cannot_listen(addr, str(exc), variable) from exc
    failures: list[OSError] = []
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                failures.append(exc)
    # A listener on any of the addresses is a conflict; an address family the host
    # lacks (``localhost`` → ::1 without IPv6) is not, as long as one address binds.
    in_use = [e for e in failures if e.errno == errno.EADDRINUSE]
    if in_use or (failures and len(failures) == len(infos)):
        first = (in_use or failures)[0]
        raise _cannot_listen(addr, first.strerror or str(first), variable) from first


def _start_metrics(addr: str) -> Any:
    from prometheus_client import start_http_server

    host, _, port = addr.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on {addr} (SKILLSVC_METRICS_ADDR): {exc.strerror or exc}",
            reason="LISTEN_FAILED",
        ) from exc
    return server


def installer_settings(settings: Settings) -> InstallerSettings:
    """The pipeline's view of the settings."""
    return InstallerSettings(
        limits=Limits(
            max_package_bytes=settings.max_package_bytes,
            max_unpacked_bytes=settings.max_unpacked_bytes,
            max_files=settings.max_files,
            max_file_bytes=settings.max_file_bytes,
        ),
        url_policy=UrlPolicy(
            allow_private=settings.url_allow_private,
            max_redirects=settings.url_max_redirects,
            timeout_seconds=settings.url_timeout_seconds,
        ),
        max_concurrent=settings.max_concurrent_installs,
        max_queued=settings.max_queued_installs,
        heartbeat_seconds=settings.heartbeat_seconds,
        max_versions_per_skill=settings.max_versions_per_skill,
    )


async def build_server(settings: Settings) -> App:
    """Build (but do not start) the whole service from ``settings``."""
    # Security settings first: a bad key or certificate stops before anything starts.
    authenticator = build_authenticator(settings)
    tls = load_server_tls(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.store_root)
    await asyncio.to_thread(store.init)
    db, embedded = await open_database(settings)
    try:
        definitions = Definitions(db, max_skills_per_tenant=settings.max_skills_per_tenant)
        hub = ProgressHub()
        installer = Installer(db, store, definitions, installer_settings(settings))
        listener = Listener(db.url, PROGRESS_CHANNEL, hub.dispatch, hub.resync)
        server = grpc.aio.server(
            # Outermost first: metrics see every final code; the auth interceptor is
            # innermost so its refusals are mapped like any other domain error.
            # Outermost first: tracing and metrics see the status the error interceptor
            # maps, and auth refusals are mapped like any other error.
            interceptors=[
                TracingInterceptor(),
                MetricsInterceptor(),
                ErrorInterceptor(),
                AuthInterceptor(authenticator, PUBLIC_SERVICES),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        skill_service_pb2_grpc.add_SkillServiceServicer_to_server(
            SkillService(
                definitions,
                installer,
                Catalog(db, store, definitions, hub),
                Lifecycle(db, store, definitions, installer.instance_id),
            ),
            server,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            if tls is None:
                port = server.add_insecure_port(settings.listen_addr)
            else:
                port = server.add_secure_port(settings.listen_addr, server_credentials(tls))
        except RuntimeError as exc:
            # grpc says only "Failed to bind"; check_listen_address names the cause
            # first in the common case, this covers a port taken in between.
            raise _cannot_listen(
                settings.listen_addr, "cannot bind (in use, not a local address, or not allowed)"
            ) from exc
    except BaseException:
        await db.close()
        if embedded is not None:
            await embedded.stop()
        raise
    return App(
        settings=settings,
        db=db,
        embedded=embedded,
        store=store,
        server=server,
        health=health_servicer,
        port=port,
        installer=installer,
        hub=hub,
        listener=listener,
    )
