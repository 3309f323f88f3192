"""Every Prometheus metric of skillsvc, defined in one place.

Metric objects are process-wide by Prometheus convention; they hold numbers, not
connections, so several servers in one process (tests) simply share them.

Under ``serve``'s supervisor every worker process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when this
module is first imported) and the supervisor's one endpoint adds them up. Counters and
histograms are summed; each gauge says how its workers' values combine
(``multiprocess_mode``) and is only ever ``set``/``inc``/``dec`` by the process that
owns the number, never computed by a collector at scrape time (a collector would only
see the scraping process).

Series:

- the grpc-ecosystem standard server series (``grpc_server_started_total``,
  ``grpc_server_handled_total``, ``grpc_server_msg_received_total``,
  ``grpc_server_msg_sent_total``, ``grpc_server_handling_seconds``; labels
  ``grpc_type``, ``grpc_service``, ``grpc_method``, ``grpc_code``), the same names and
  labels as go-grpc-prometheus and py-grpc-prometheus, so existing dashboards work;
- the seed runbook's install series: ``skill_install_total{status, source_type}``
  (``status`` = ``success`` | ``failed``), ``skill_install_duration_seconds``,
  ``skill_storage_bytes``;
- ``skill_installs_running``/``skill_installs_queued``, the database pool
  (``skillsvc_db_pool_max``, ``skillsvc_db_pool_size``, ``skillsvc_db_pool_in_use``),
  ``skillsvc_healthy`` and the store's filesystem (``skill_store_free_bytes``,
  ``skill_store_total_bytes``);
- the blob store (``SKILLSVC_BLOB_STORE``): ``skill_blob_store_requests_total{op, result}``,
  ``skill_blob_store_bytes_total{direction}`` and ``skill_blob_store_up``;
- materialisation: ``skill_materialisations_total{result}``,
  ``skill_materialised_bytes_total``, ``skill_materialise_seconds``,
  ``skill_materialise_lag_seconds``, ``skill_materialise_pending`` and
  ``skill_materialise_caught_up``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram

# -- gRPC server series (grpc-ecosystem names and labels) ---------------------------

GRPC_LABELS: Final = ("grpc_type", "grpc_service", "grpc_method")
"""Labels of every per-RPC series; ``grpc_server_handled_total`` adds ``grpc_code``."""

GRPC_STARTED: Final = Counter(
    "grpc_server_started_total",
    "Total number of RPCs started on the server.",
    GRPC_LABELS,
)
GRPC_HANDLED: Final = Counter(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    (*GRPC_LABELS, "grpc_code"),
)
GRPC_MSG_RECEIVED: Final = Counter(
    "grpc_server_msg_received_total",
    "Total number of RPC stream messages received on the server.",
    GRPC_LABELS,
)
GRPC_MSG_SENT: Final = Counter(
    "grpc_server_msg_sent_total",
    "Total number of gRPC stream messages sent by the server.",
    GRPC_LABELS,
)
GRPC_HANDLING: Final = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level "
    "handled by the server.",
    GRPC_LABELS,
    # go-grpc-prometheus's default (prometheus.DefBuckets), so dashboards' quantiles agree.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

GRPC_TYPES: Final = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
"""``grpc_type`` by (request streaming, response streaming)."""


def init_grpc_metrics(services: Iterable[Any]) -> None:
    """Create every method's series at zero, with code OK, before the first call.

    ``services`` are protobuf ``ServiceDescriptor``s of the registered services, so a
    dashboard shows every method (and ``rate()`` has a starting point) from the first
    scrape. Other codes appear when they first happen.
    """
    for service in services:
        for method in service.methods:
            labels = (
                GRPC_TYPES[method.client_streaming, method.server_streaming],
                service.full_name,
                method.name,
            )
            GRPC_STARTED.labels(*labels)
            GRPC_MSG_RECEIVED.labels(*labels)
            GRPC_MSG_SENT.labels(*labels)
            GRPC_HANDLING.labels(*labels)
            GRPC_HANDLED.labels(*labels, "OK")


# -- installs (the seed runbook's series) --------------------------------------------

INSTALL_SUCCESS: Final = "success"
INSTALL_FAILED: Final = "failed"
SOURCE_TYPES: Final = ("upload", "url")

INSTALL_TOTAL: Final = Counter(
    "skill_install_total",
    "Finished installs, by outcome (success, failed) and source type (upload, url).",
    ["status", "source_type"],
)
for _status in (INSTALL_SUCCESS, INSTALL_FAILED):
    for _source in SOURCE_TYPES:
        # Present at zero, so the runbook's success-rate ratio has both sides at once.
        INSTALL_TOTAL.labels(_status, _source)

INSTALL_DURATION: Final = Histogram(
    "skill_install_duration_seconds",
    "Install duration from acceptance to the terminal stage.",
    # Sub-second buckets for small packages, then the runbook's 1, 5, 10, 30, 60, 120.
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 5, 10, 30, 60, 120),
)
INSTALLS_RUNNING: Final = Gauge(
    "skill_installs_running",
    "Installs holding a slot (past QUEUED, not yet finished).",
    multiprocess_mode="livesum",
)
INSTALLS_QUEUED: Final = Gauge(
    "skill_installs_queued",
    "Accepted installs waiting for a slot (SKILLSVC_MAX_CONCURRENT_INSTALLS).",
    multiprocess_mode="livesum",
)

STORAGE_BYTES: Final = Gauge(
    "skill_storage_bytes",
    "Bytes held in the file store: extracted packages and original archives.",
    # Every worker of a host measures the same shared store (and counts its own
    # installs and deletions in between): the largest live view.
    multiprocess_mode="livemax",
)

# -- process state ------------------------------------------------------------------

HEALTHY: Final = Gauge(
    "skillsvc_healthy",
    "1 while the database and the store answer the health probe, else 0.",
    # 0 as soon as one live worker's probe fails.
    multiprocess_mode="livemin",
)
DB_STATEMENTS: Final = Counter(
    "skillsvc_db_statements",
    "SQL statements sent on pooled database connections, BEGIN and COMMIT included "
    "(its increase over installs is the statements per install).",
)
DB_POOL_MAX: Final = Gauge(
    "skillsvc_db_pool_max",
    "Connections the database pools may open (SKILLSVC_DB_POOL_SIZE per process).",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE: Final = Gauge(
    "skillsvc_db_pool_size",
    "Connections the database pools hold open.",
    multiprocess_mode="livesum",
)
DB_POOL_IN_USE: Final = Gauge(
    "skillsvc_db_pool_in_use",
    "Pooled database connections acquired by a request or an install.",
    multiprocess_mode="livesum",
)

# The store's filesystem, so an alert fires before installs fail with STORE_FULL
# (refreshed by every health probe; no node_exporter needed).
STORE_FREE_BYTES: Final = Gauge(
    "skill_store_free_bytes",
    "Bytes free for the service on the file store's filesystem.",
    # Workers probe the same filesystem in turn: the latest reading of a live one.
    multiprocess_mode="livemostrecent",
)
STORE_TOTAL_BYTES: Final = Gauge(
    "skill_store_total_bytes",
    "Size in bytes of the file store's filesystem.",
    multiprocess_mode="livemax",
)

# -- materialisation (each node's local copy of what is current anywhere) -----------

MATERIALISE_RESULTS: Final = ("success", "corrupt", "missing", "failed")
"""``result`` of ``skill_materialisations_total``: placed and verified; refused because
the archive or its files do not match the recorded digests; the archive is not in the
blob store; anything else (blob store or disk unavailable), retried with backoff."""

MATERIALISATIONS: Final = Counter(
    "skill_materialisations",
    "Versions fetched from the blob store and extracted into this node's store, by result.",
    ["result"],
)
for _result in MATERIALISE_RESULTS:
    MATERIALISATIONS.labels(_result)
MATERIALISED_BYTES: Final = Counter(
    "skill_materialised_bytes",
    "Bytes of extracted files placed in this node's store by materialisation.",
)
MATERIALISE_SECONDS: Final = Histogram(
    "skill_materialise_seconds",
    "Time to fetch, check, extract, verify and place one version.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MATERIALISE_LAG: Final = Histogram(
    "skill_materialise_lag_seconds",
    "Time from a current-version change in the database (any node) to this node's "
    "current link following it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
MATERIALISE_PENDING: Final = Gauge(
    "skill_materialise_pending",
    "Skills whose local copy is not known to match the database yet (changes heard but "
    "not applied, and failures waiting for their retry).",
    # Every worker of a host follows the same changes into the same store: the
    # laggiest live worker's view.
    multiprocess_mode="livemax",
)
MATERIALISE_CAUGHT_UP: Final = Gauge(
    "skill_materialise_caught_up",
    "1 once the start-up catch-up pass has materialised every current version it could.",
    # 0 while any live worker is still catching up.
    multiprocess_mode="livemin",
)

# -- the blob store (original archives and kept bytes; local or an S3 bucket) -------

BLOB_OPS: Final = ("put", "fetch", "stream", "exists", "delete", "list", "size", "probe")
"""``op`` label values of :data:`BLOB_REQUESTS`."""

BLOB_REQUESTS: Final = Counter(
    "skill_blob_store_requests_total",
    "Blob store operations, by operation and result (ok, missing, corrupt, unavailable).",
    ["op", "result"],
)
for _op in BLOB_OPS:
    for _result in ("ok", "unavailable"):
        BLOB_REQUESTS.labels(_op, _result)
BLOB_BYTES: Final = Counter(
    "skill_blob_store_bytes_total",
    "Bytes moved to (direction=out) and from (direction=in) the blob store.",
    ["direction"],
)
BLOB_BYTES.labels("in")
BLOB_BYTES.labels("out")
BLOB_STORE_UP: Final = Gauge(
    "skill_blob_store_up",
    "1 while the blob store answered its last probe, else 0 (reads of installed "
    "packages go on without it; installs and downloads fail UNAVAILABLE).",
    # 0 as soon as one live worker's probe fails.
    multiprocess_mode="livemin",
)
