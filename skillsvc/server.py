"""The composition root: settings → database → store → domain → gRPC server.

:func:`build_server` wires everything and returns an :class:`App` that the CLI (and
the tests) start and stop. Health and reflection are registered here, with service
names taken from the descriptors.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from skillsvc.api import (
    AuthInterceptor,
    ErrorInterceptor,
    LayeredInterceptor,
    MetricsInterceptor,
    SkillService,
    tracing_interceptors,
)
from skillsvc.auth import Authenticator, JwtAuthentication, build_authenticator, load_key_set
from skillsvc.blobs import BlobStore, open_blob_store
from skillsvc.config import ConfigError, Settings
from skillsvc.core.archive_work import ArchiveWork
from skillsvc.core.cache import ReadCache
from skillsvc.core.catalog import Catalog
from skillsvc.core.definitions import Definitions
from skillsvc.core.installs import Installer, InstallerSettings
from skillsvc.core.lifecycle import Lifecycle
from skillsvc.core.materialise import Materialiser, fan_out
from skillsvc.core.progress import ProgressHub
from skillsvc.core.watch import WatchHub, WatchSettings
from skillsvc.db import (
    CATALOG_CHANNEL,
    EVENTS_CHANNEL,
    PROGRESS_CHANNEL,
    Database,
    EmbeddedPostgres,
    Listener,
    connect,
)
from skillsvc.errors import Unavailable
from skillsvc.intake import UrlPolicy
from skillsvc.loops import cancel_and_wait, run_forever
from skillsvc.metrics import (
    BLOB_STORE_UP,
    DB_POOL_IN_USE,
    DB_POOL_MAX,
    DB_POOL_SIZE,
    HEALTHY,
    STORE_FREE_BYTES,
    STORE_TOTAL_BYTES,
    init_grpc_metrics,
)
from skillsvc.store import Store
from skillsvc.tls import ServerTls, load_server_tls, server_credentials
from skillsvc.v1 import skill_service_pb2, skill_service_pb2_grpc
from skillsvc.validation import Limits

logger = logging.getLogger(__name__)

SERVICE = skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
SERVICE_NAME = SERVICE.full_name
HEALTH_SERVICE_NAME = HEALTH_SERVICE.full_name
LIVENESS_SERVICE_NAME = "liveness"
"""A health service name that is SERVING from start-up until shutdown begins, whatever
the database does: for liveness probes, which must not restart a process because its
database is away (readiness, service "", follows the database and the store)."""
BLOB_STORE_HEALTH_NAME = "blob-store"
"""A health service name that is SERVING while the blob store (``SKILLSVC_BLOB_STORE``)
answers. Readiness (service "") does not follow it: reads of installed packages go on
without the bucket, so a load balancer must not take every replica out when it is
down; installs and downloads fail UNAVAILABLE meanwhile."""

GIL_SWITCH_INTERVAL_SECONDS = 0.001
"""How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).

The event loop releases the GIL at every system call (each socket read and write, each
poll), and a worker thread busy with Python code (extraction, the store's path checks)
may then keep it for a whole interval before the loop gets it back: during installs
that wait, repeated, made health checks queue. With 1 ms, scenario 7's health ``Check``
p99 fell from 95 to 69 ms and from 120 to 92 ms in two interleaved pairs of full runs
(throughput unchanged). See the README's Performance section."""
# Callable without a token (SPEC §7): probes and grpcurl's discovery.
PUBLIC_SERVICES = frozenset({HEALTH_SERVICE_NAME, reflection.SERVICE_NAME})


@dataclass(frozen=True)
class Security:
    """Authentication and TLS, built once from the settings by the composition root."""

    authenticator: Authenticator
    """Verifies callers (its keys are re-read on SIGHUP)."""
    tls: ServerTls | None
    """The TLS material of the gRPC port; None for plaintext."""


def build_security(settings: Settings) -> Security:
    """Read the key and certificate files; ConfigError naming the variable if unusable."""
    return Security(authenticator=build_authenticator(settings), tls=load_server_tls(settings))


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC core channel arguments of the server (README, "Operations").

    Message size, streams per connection, keepalive in both directions and the
    connection age that makes clients behind an L4 balancer reconnect (and so spread
    over new replicas) all come from the settings.
    """
    ms = 1000
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * ms)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * ms)),
        # Enforcement of the clients' pings: allowed on idle connections, no more often
        # than the minimum interval; a client that pings faster is sent GOAWAY.
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.keepalive_min_ping_seconds * ms),
        ),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if settings.max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * ms)),
            (
                "grpc.max_connection_age_grace_ms",
                int(settings.max_connection_age_grace_seconds * ms),
            ),
        ]
    return options


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
    blobs: BlobStore
    """The blob store: original archives and kept upload bytes."""
    server: grpc.aio.Server
    """The gRPC server."""
    health: health.aio.HealthServicer
    """The standard health service."""
    installer: Installer
    """The install pipeline."""
    archives: ArchiveWork
    """The processes (or threads) that read and extract archives."""
    hub: ProgressHub
    """Progress fan-out to watchers."""
    watch: WatchHub
    """The change log's reader and WatchSkills' watchers."""
    listener: Listener
    """The LISTEN connection feeding the hub and the read cache."""
    cache: ReadCache
    """Definitions and packages read by GetSkillDefinition and GetPackage."""
    materialiser: Materialiser
    """Keeps this node's packages in line with the database (every current version)."""
    port: int
    """The bound gRPC port (useful with port 0)."""
    authenticator: Authenticator
    """Verifies callers; :meth:`reload_keys` swaps its keys."""
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _metrics_server: Any = None
    _healthy: bool | None = None
    _blobs_up: bool | None = None

    @property
    def address(self) -> str:
        """``host:port`` clients can dial."""
        host = self.settings.listen_addr.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Recover, then serve RPCs and start probing health."""
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
        await self.listener.start()
        self.cache.connected()
        await self.watch.start()
        await self.archives.start()
        await self.installer.start()
        # Links are fixed before serving; versions to fetch are caught up in the
        # background while health says NOT_SERVING (README, "Running several replicas").
        self.materialiser.on_caught_up = self._caught_up
        await self.materialiser.start()
        # /metrics answers before health says SERVING, so whoever waits for SERVING
        # can scrape at once.
        if self.settings.metrics_addr:
            self._metrics_server = _start_metrics(self.settings.metrics_addr)
        # grpc's servicer starts with "" SERVING: say NOT_SERVING until the first probe
        # (and, on a node catching up, until it has the files), or a probe arriving in
        # between would see a node that is not ready as ready.
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        await self.health.set(LIVENESS_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.check_health()
        await self.check_blob_store()
        # Two loops: a bucket that times out must not slow the readiness probe.
        for what, probe, name in (
            ("health probe", self._probe, "health-probe"),
            ("blob store probe", self._probe_blobs, "blob-store-probe"),
        ):
            self._tasks.append(
                asyncio.create_task(
                    run_forever(
                        what, probe, interval=self.settings.health_interval_seconds, log=logger
                    ),
                    name=name,
                )
            )
        logger.info("skillsvc serving on %s", self.address)

    def _caught_up(self) -> None:
        """The catch-up pass is done: publish health now rather than at the next probe."""
        task = asyncio.create_task(self.check_health(), name="health-after-catch-up")
        self._tasks.append(task)

    def reload_keys(self) -> bool:
        """Re-read the JWT key files (SIGHUP); on any error keep the keys in use.

        Tokens signed with a key still in the new set keep working, tokens of a new key
        are accepted from the next call on. Returns whether new keys were loaded.
        """
        if not isinstance(self.authenticator, JwtAuthentication):
            logger.info("SIGHUP: no keys to reload (SKILLSVC_AUTH=%s)", self.settings.auth)
            return False
        try:
            keys = load_key_set(self.settings)
        except ConfigError as exc:
            # The message names the variable and the line or kid, never key material.
            logger.error("SIGHUP: keeping the current JWT keys: %s", exc)  # noqa: TRY400
            return False
        self.authenticator.replace_keys(keys)
        logger.info("SIGHUP: JWT keys reloaded: %s", keys.describe())
        return True

    async def check_health(self) -> bool:
        """Probe the database and the store once and publish the result.

        Any failure of the probe (not only the expected ones) means NOT_SERVING, and so
        does a start-up catch-up still materialising current versions (a runtime beside
        this node would not find their files yet). The change is logged, not every
        probe: WARNING when it goes, INFO when it is back (and while catching up).
        """
        healthy = True
        cause = ""
        try:
            async with asyncio.timeout(max(1.0, self.settings.health_interval_seconds)):
                await self.db.repo.ping()
                await asyncio.to_thread(self.store.probe)
            if not self.materialiser.caught_up:
                healthy, cause = False, "catching up: materialising the current versions"
        except (Unavailable, TimeoutError) as exc:
            healthy, cause = False, str(exc) or type(exc).__name__
        except Exception as exc:
            logger.warning("health probe failed unexpectedly", exc_info=exc)
            healthy, cause = False, str(exc) or type(exc).__name__
        if healthy != self._healthy:
            if healthy:
                logger.info("health: SERVING (database and store answer, caught up)")
            elif self.materialiser.caught_up:
                logger.warning("health: NOT_SERVING: %s", cause)
            else:
                logger.info("health: NOT_SERVING: %s", cause)
        self._healthy = healthy
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if healthy
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        HEALTHY.set(1 if healthy else 0)
        self.sample_pool()
        return healthy

    def sample_pool(self) -> None:
        """Publish the database pool's size and use (sampled with the health probe)."""
        pool = self.db.pool
        size = pool.get_size()
        DB_POOL_MAX.set(pool.get_max_size())
        DB_POOL_SIZE.set(size)
        DB_POOL_IN_USE.set(size - pool.get_idle_size())

    async def check_blob_store(self) -> bool:
        """Probe the blob store once; publish ``blob-store`` health and ``skill_blob_store_up``."""
        try:
            async with asyncio.timeout(max(5.0, self.settings.health_interval_seconds)):
                await self.blobs.probe()
            up, cause = True, ""
        except (Unavailable, TimeoutError) as exc:
            up, cause = False, str(exc) or type(exc).__name__
        except Exception as exc:
            logger.warning("blob store probe failed unexpectedly", exc_info=exc)
            up, cause = False, str(exc) or type(exc).__name__
        if up != self._blobs_up:
            if up:
                logger.info("blob store %s answers", self.blobs.location)
            else:
                logger.warning(
                    "blob store down (installs and downloads fail UNAVAILABLE): %s", cause
                )
        self._blobs_up = up
        await self.health.set(
            BLOB_STORE_HEALTH_NAME,
            health_pb2.HealthCheckResponse.SERVING
            if up
            else health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        BLOB_STORE_UP.set(1 if up else 0)
        return up

    async def _probe_blobs(self) -> None:
        await self.check_blob_store()

    async def _probe(self) -> None:
        await self.check_health()
        free, total = await asyncio.to_thread(self.store.space)
        STORE_FREE_BYTES.set(free)
        STORE_TOTAL_BYTES.set(total)
        # The change log's retention rides on this loop (rate-limited by the hub).
        await self.watch.prune_if_due()

    async def stop(self, grace: float | None = None) -> None:
        """Go NOT_SERVING, refuse new calls, let running ones finish, release everything."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await cancel_and_wait(self._tasks)
        try:
            await self.materialiser.stop()
        except Exception:
            logger.warning("stopping materialisation failed", exc_info=True)
        await self.health.enter_graceful_shutdown()
        # Watches never end by themselves: end them now (UNAVAILABLE, resume with
        # since elsewhere) rather than hold the grace period and be cut off.
        try:
            await self.watch.close()
        except Exception:
            logger.warning("could not end the watches", exc_info=True)
        # New calls are refused at once; calls in flight (uploads included) and the
        # installs running in the background share the same grace period. Each step
        # below runs even if an earlier one failed: shutdown is never cut short.
        results = await asyncio.gather(
            self.server.stop(grace), self.installer.stop(grace), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("stopping failed", exc_info=result)
        for name, step in (
            ("the archive processes", self.archives.stop),
            ("the LISTEN connection", self.listener.stop),
            ("the metrics endpoint", self._stop_metrics),
            ("the connection pool", self.db.close),
            ("the blob store", self.blobs.close),
        ):
            try:
                await step()
            except Exception:
                logger.warning("could not close %s", name, exc_info=True)
        if self.embedded is not None:
            await self.embedded.stop()
        logger.info("skillsvc stopped")

    async def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


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


async def build_server(
    settings: Settings, *, run_migrations: bool = True, reuse_port: bool = False
) -> App:
    """Build (but do not start) the whole service from ``settings``.

    A worker of ``serve``'s supervisor passes ``run_migrations=False`` (the supervisor
    migrated once) and ``reuse_port=True`` (its siblings bind the same address).
    """
    # Security first: a bad key or certificate stops before anything starts.
    security = build_security(settings)
    tls = security.tls
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"SKILLSVC_DATA_DIR: cannot create {str(settings.data_dir)!r}: {exc.strerror or exc}"
        ) from exc
    store = Store(settings.store_root)
    await asyncio.to_thread(store.init)
    blobs = open_blob_store(settings.blob_store or "", store.root, settings.blob_store_options)
    db, embedded = await open_database(settings, run_migrations=run_migrations)
    try:
        cache = ReadCache(settings.read_cache_entries, settings.read_cache_ttl_seconds)
        # Whatever this process commits may have changed a cached row: drop them all
        # at once (its own NOTIFY would come a moment later), so callers read their
        # own writes.
        db.after_commit = cache.invalidate_all
        definitions = Definitions(
            db, max_skills_per_tenant=settings.max_skills_per_tenant, cache=cache
        )
        hub = ProgressHub()
        watch = WatchHub(db, WatchSettings(retention_seconds=settings.watch_retention_seconds))
        archives = ArchiveWork(settings.archive_processes)
        installer = Installer(
            db, store, definitions, installer_settings(settings), blobs=blobs, archives=archives
        )
        materialiser = Materialiser(
            db, store, blobs, installer_settings(settings).limits, installer.instance_id
        )

        def reconnected() -> None:
            hub.resync()
            watch.resync()
            cache.connected()
            materialiser.resync()

        listener = Listener(
            db.url,
            {
                PROGRESS_CHANNEL: hub.dispatch,
                # The cache first: a replica drops stale rows before anything else reacts.
                CATALOG_CHANNEL: fan_out(cache.dispatch, materialiser.dispatch),
                EVENTS_CHANNEL: watch.dispatch,
            },
            reconnected,
            on_lost=cache.disconnected,
        )
        server = grpc.aio.server(
            # Outermost first: tracing and metrics see the status the error interceptor
            # maps, and auth refusals are mapped like any other error; the access line
            # (metrics) is written inside the RPC's span, so it carries the trace id.
            interceptors=[
                LayeredInterceptor(
                    [
                        *tracing_interceptors(),
                        MetricsInterceptor(),
                        ErrorInterceptor(),
                        AuthInterceptor(security.authenticator, PUBLIC_SERVICES),
                    ]
                )
            ],
            options=[
                *server_options(settings),
                *([("grpc.so_reuseport", 1)] if reuse_port else []),
            ],
        )
        skill_service_pb2_grpc.add_SkillServiceServicer_to_server(
            SkillService(
                definitions,
                installer,
                Catalog(db, store, definitions, hub, blobs=blobs),
                Lifecycle(
                    db,
                    store,
                    definitions,
                    installer.instance_id,
                    blobs=blobs,
                    materialiser=materialiser,
                ),
                watch,
            ),
            server,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        init_grpc_metrics((SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE))
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
        blobs=blobs,
        server=server,
        health=health_servicer,
        port=port,
        installer=installer,
        archives=archives,
        hub=hub,
        watch=watch,
        listener=listener,
        cache=cache,
        materialiser=materialiser,
        authenticator=security.authenticator,
    )
