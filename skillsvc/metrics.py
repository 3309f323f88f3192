"""Every Prometheus metric of skillsvc, defined in one place.

Metric objects are process-wide by Prometheus convention; they hold numbers, not
connections, so several servers in one process (tests) simply share them.

Under ``serve``'s supervisor every worker process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when this
module is first imported) and the supervisor's one endpoint adds them up. Counters and
histograms are summed; each gauge says how its workers' values combine.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

RPC_TOTAL: Final = Counter(
    "skillsvc_rpc_total",
    "RPCs handled, by method and final status code.",
    ["method", "code"],
)
RPC_DURATION: Final = Histogram(
    "skillsvc_rpc_duration_seconds",
    "RPC latency from the first request byte to the status, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INSTALL_TOTAL: Final = Counter(
    "skill_install_total",
    "Finished installs, by outcome (succeeded, failed) and source type (upload, url).",
    ["status", "source_type"],
)
INSTALL_DURATION: Final = Histogram(
    "skill_install_duration_seconds",
    "Install duration from acceptance to the terminal stage.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
STORAGE_BYTES: Final = Gauge(
    "skill_storage_bytes",
    "Bytes held in the file store: extracted packages and original archives.",
    # Every worker of a host measures the same shared store: the largest live view.
    multiprocess_mode="livemax",
)
HEALTHY: Final = Gauge(
    "skillsvc_healthy",
    "1 while the database and the store answer the health probe, else 0.",
    # 0 as soon as one live worker's probe fails.
    multiprocess_mode="livemin",
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
