"""The operator's queries: integrity sweeps, garbage collection, history and status.

Kept apart from the request-path repository because they scan whole tables; they run
from the ``skillsvc`` command, not from RPCs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from skillsvc.db._driver import Executor, translate_errors

READY_PACKAGES: Final = """
SELECT skill_id, version, sha256, size_bytes, files FROM skill_packages WHERE state = 'READY'
ORDER BY skill_id, version
"""

ALL_PACKAGES: Final = "SELECT skill_id, version, state FROM skill_packages"

ALL_DEFINITIONS: Final = "SELECT skill_id, current_version FROM skill_definitions"

MARK_FAILED: Final = """
UPDATE skill_packages SET state = 'FAILED', update_time = now()
WHERE skill_id = $1 AND version = $2 AND state = 'READY'
"""

# Failed installs' log rows past the retention. Their kept bytes go with them.
EXPIRED_FAILED_OPERATIONS: Final = """
SELECT operation_id, skill_id, archive_sha256 FROM skill_install_logs
WHERE state IN ('FAILED', 'CANCELLED') AND update_time < now() - make_interval(secs => $1)
"""

DELETE_OPERATIONS: Final = "DELETE FROM skill_install_logs WHERE operation_id = ANY($1::uuid[])"

EXPIRED_FAILED_PACKAGES: Final = """
SELECT skill_id, version FROM skill_packages
WHERE state = 'FAILED' AND update_time < now() - make_interval(secs => $1)
"""

# Archives in blobs/ that are some package's original.
BLOBS_IN_USE: Final = "SELECT DISTINCT sha256 FROM skill_packages WHERE sha256 <> ''"

# Kept bytes (kept/) still wanted: by a recent failure (for Retry) or work under way.
KEPT_IN_USE: Final = """
SELECT DISTINCT archive_sha256 FROM skill_install_logs
WHERE archive_sha256 <> ''
  AND (state IN ('PENDING', 'RUNNING')
       OR update_time >= now() - make_interval(secs => $1))
"""

HISTORY: Final = """
SELECT operation_id, type, version, state, stage, error_code, error_reason, error_message,
       from_version, to_version, reason, attempt, requested_by, create_time, update_time
FROM skill_install_logs WHERE skill_id = $1
ORDER BY create_time DESC, operation_id DESC
LIMIT $2
"""

# Install outcomes over the last $1 seconds.
INSTALL_STATS: Final = """
SELECT
    count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded,
    count(*) FILTER (WHERE state IN ('FAILED', 'CANCELLED')) AS failed,
    count(*) FILTER (WHERE state IN ('PENDING', 'RUNNING')) AS running,
    avg(extract(epoch FROM update_time - create_time)) FILTER (WHERE state = 'SUCCEEDED')
        AS mean_seconds
FROM skill_install_logs
WHERE type = 'INSTALL' AND create_time >= now() - make_interval(secs => $1)
"""

RECENT_FAILURES: Final = """
SELECT skill_id, version, error_code, error_reason, error_message, update_time
FROM skill_install_logs
WHERE state = 'FAILED' AND create_time >= now() - make_interval(secs => $1)
ORDER BY update_time DESC LIMIT $2
"""

STORAGE_PER_SKILL: Final = """
SELECT d.skill_id, d.current_version,
       count(p.version) FILTER (WHERE p.state = 'READY') AS ready_versions,
       coalesce(sum(p.size_bytes + p.unpacked_bytes) FILTER (WHERE p.state = 'READY'), 0)
           AS bytes
FROM skill_definitions d LEFT JOIN skill_packages p ON p.skill_id = d.skill_id
GROUP BY d.skill_id, d.current_version
ORDER BY bytes DESC, d.skill_id
"""

LIVE_INSTANCES: Final = """
SELECT instance_id FROM skill_instances
WHERE heartbeat_time >= now() - make_interval(secs => $1)
"""


@dataclass(frozen=True)
class ReadyPackage:
    """A READY package and what was recorded about its files."""

    skill_id: str
    """The skill."""
    version: str
    """The version."""
    sha256: str
    """Digest of the original archive."""
    size_bytes: int
    """Archive size."""
    files: list[tuple[str, int, str]]
    """(path, size, sha256) of every file, as recorded at install."""


class Maintenance:
    """Named operator queries over a pool or one connection."""

    def __init__(self, executor: Executor) -> None:
        self._db = executor

    async def ready_packages(self) -> list[ReadyPackage]:
        """Every READY package with its recorded files."""
        with translate_errors():
            rows = await self._db.fetch(READY_PACKAGES)
        return [
            ReadyPackage(
                r["skill_id"],
                r["version"],
                r["sha256"],
                r["size_bytes"],
                [(f["path"], f["size"], f["sha256"]) for f in r["files"]],
            )
            for r in rows
        ]

    async def package_states(self) -> dict[tuple[str, str], str]:
        """(skill, version) → state for every package row."""
        with translate_errors():
            rows = await self._db.fetch(ALL_PACKAGES)
        return {(r["skill_id"], r["version"]): r["state"] for r in rows}

    async def current_versions(self) -> dict[str, str | None]:
        """skill → current version for every definition."""
        with translate_errors():
            rows = await self._db.fetch(ALL_DEFINITIONS)
        return {r["skill_id"]: r["current_version"] for r in rows}

    async def mark_failed(self, skill_id: str, version: str) -> bool:
        """Mark a READY package FAILED (its files cannot be trusted or restored)."""
        with translate_errors():
            return str(await self._db.execute(MARK_FAILED, skill_id, version)) == "UPDATE 1"

    async def expired_failed_operations(self, older_than: float) -> list[tuple[str, str, str]]:
        """(operation id, skill, kept digest) of failed operations past the retention."""
        with translate_errors():
            rows = await self._db.fetch(EXPIRED_FAILED_OPERATIONS, older_than)
        return [(str(r["operation_id"]), r["skill_id"], r["archive_sha256"]) for r in rows]

    async def delete_operations(self, operation_ids: list[str]) -> None:
        """Delete install-log rows."""
        with translate_errors():
            await self._db.execute(DELETE_OPERATIONS, operation_ids)

    async def expired_failed_packages(self, older_than: float) -> list[tuple[str, str]]:
        """(skill, version) of FAILED package rows past the retention."""
        with translate_errors():
            rows = await self._db.fetch(EXPIRED_FAILED_PACKAGES, older_than)
        return [(r["skill_id"], r["version"]) for r in rows]

    async def blobs_in_use(self) -> set[str]:
        """Digests of the archives in blobs/ that packages refer to."""
        with translate_errors():
            rows = await self._db.fetch(BLOBS_IN_USE)
        return {r[0] for r in rows}

    async def kept_in_use(self, retention: float) -> set[str]:
        """Digests of kept failed-upload bytes that must stay."""
        with translate_errors():
            rows = await self._db.fetch(KEPT_IN_USE, retention)
        return {r[0] for r in rows}

    async def history(self, skill_id: str, limit: int) -> list[dict[str, Any]]:
        """A skill's recent operations, newest first."""
        with translate_errors():
            rows = await self._db.fetch(HISTORY, skill_id, limit)
        return [_plain(dict(r)) for r in rows]

    async def install_stats(self, window: float) -> dict[str, Any]:
        """Succeeded, failed and running installs, and the mean install time."""
        with translate_errors():
            row = await self._db.fetchrow(INSTALL_STATS, window)
        return _plain(dict(row))

    async def recent_failures(self, window: float, limit: int) -> list[dict[str, Any]]:
        """The latest failed operations with their reasons."""
        with translate_errors():
            rows = await self._db.fetch(RECENT_FAILURES, window, limit)
        return [_plain(dict(r)) for r in rows]

    async def storage_per_skill(self) -> list[dict[str, Any]]:
        """Bytes held per skill (archives plus extracted files of READY packages)."""
        with translate_errors():
            rows = await self._db.fetch(STORAGE_PER_SKILL)
        return [_plain(dict(r)) for r in rows]

    async def live_instances(self, stale_after: float) -> set[str]:
        """Instances with a recent heartbeat."""
        with translate_errors():
            rows = await self._db.fetch(LIVE_INSTANCES, stale_after)
        return {r["instance_id"] for r in rows}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly values: times as ISO text, UUIDs and decimals as text/float."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif value is None or isinstance(value, (str, int, float, bool)):
            out[key] = value
        else:
            out[key] = float(value) if key.endswith("seconds") or key == "bytes" else str(value)
    return out
