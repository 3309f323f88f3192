"""The composition root: settings → database → store → domain → gRPC server.

:func:`build_server` wires everything and returns an :class:`App` that the CLI (and
the tests) start and stop. Health and reflection are registered here, with service
names taken from the descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from skillsvc.api import ErrorInterceptor, MetricsInterceptor, SkillService
from skillsvc.config import Settings
from skillsvc.core.definitions import Definitions
from skillsvc.db import Database, EmbeddedPostgres, connect
from skillsvc.errors import Unavailable
from skillsvc.metrics import HEALTHY
from skillsvc.store import Store
from skillsvc.v1 import skill_service_pb2, skill_service_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Larger than gRPC's 4 MiB default so clients may send 4 MiB chunks plus framing.
MAX_MESSAGE_BYTES = 5 * 1024 * 1024


async def open_database(settings: Settings) -> tuple[Database, EmbeddedPostgres | None]:
    """Connect to ``SKILLSVC_DATABASE_URL``, or start the embedded server; migrate."""
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = await EmbeddedPostgres.start(settings.data_dir / "postgres")
        url = embedded.url
    try:
        db = await connect(url, pool_size=settings.db_pool_size)
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
    port: int
    """The bound gRPC port (useful with port 0)."""
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _metrics_server: Any = None

    @property
    def address(self) -> str:
        """``host:port`` clients can dial."""
        host = self.settings.listen_addr.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Serve RPCs and start probing health."""
        await self.server.start()
        await self.check_health()
        self._tasks.append(asyncio.create_task(self._probe_forever(), name="health-probe"))
        if self.settings.metrics_addr:
            self._metrics_server = _start_metrics(self.settings.metrics_addr)
        logger.info("skillsvc serving on %s", self.address)

    async def check_health(self) -> bool:
        """Probe the database and the store once and publish the result."""
        healthy = True
        try:
            async with asyncio.timeout(max(1.0, self.settings.health_interval_seconds)):
                await self.db.repo.ping()
                await asyncio.to_thread(self.store.probe)
        except (Unavailable, TimeoutError) as exc:
            logger.warning("health probe failed: %s", exc)
            healthy = False
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if healthy
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        HEALTHY.set(1 if healthy else 0)
        return healthy

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_seconds)
            await self.check_health()

    async def stop(self, grace: float | None = None) -> None:
        """Go NOT_SERVING, refuse new calls, let running ones finish, release everything."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        await self.db.close()
        if self.embedded is not None:
            await self.embedded.stop()
        logger.info("skillsvc stopped")


def _start_metrics(addr: str) -> Any:
    from prometheus_client import start_http_server

    host, _, port = addr.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"))
    return server


async def build_server(settings: Settings) -> App:
    """Build (but do not start) the whole service from ``settings``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.store_root)
    await asyncio.to_thread(store.init)
    db, embedded = await open_database(settings)
    try:
        removed = await asyncio.to_thread(store.clear_staging)
        if removed:
            logger.info("removed %d leftover staging entries", removed)
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(), ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        skill_service_pb2_grpc.add_SkillServiceServicer_to_server(
            SkillService(Definitions(db)), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        port = server.add_insecure_port(settings.listen_addr)
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
    )
