"""All SQL of the request path, as named constants (operator queries: ``_maintenance``).

Each table's column list is written once and shared by the statements that return
whole rows, so a new column is added in one place (and mapped in ``_rows``).
"""

# S608: the only interpolations are this module's own column-list constants, never input.
# ruff: noqa: S608

from __future__ import annotations

from typing import Final

PROGRESS_CHANNEL: Final = "skillsvc_progress"
"""The NOTIFY channel of operation changes."""

# -- column lists (each written once; ``_rows`` maps them) --------------------------

_DEFINITION: Final = """skill_id, tenant, display_name, description, active, public,
    current_version, create_time, update_time"""

_OPERATION_COLUMNS: Final = (
    "operation_id", "type", "skill_id", "version", "state", "stage", "from_version",
    "to_version", "reason", "attempt", "retry_of", "error_code", "error_reason",
    "error_message", "error_details", "bytes_done", "bytes_total", "requested_by",
    "source_type", "source_uri", "expected_sha256", "activate", "request_id",
    "archive_sha256", "owner", "message", "seq", "requested_version", "create_time",
    "update_time",
)  # fmt: skip
_OPERATION: Final = ", ".join(_OPERATION_COLUMNS)
# The same, qualified for the joins that read operations as ``o``.
_OPERATION_O: Final = ", ".join(f"o.{c}" for c in _OPERATION_COLUMNS)

# Packages are read joined with their definition (``current`` comes from it).
_PACKAGE: Final = """p.skill_id, p.version, p.state, p.sha256, p.size_bytes, p.unpacked_bytes,
    p.file_count, p.source_type, p.source_uri, p.manifest, p.path, p.operation_id,
    p.create_time, p.update_time, (d.current_version IS NOT DISTINCT FROM p.version) AS current
FROM skill_packages p JOIN skill_definitions d ON d.skill_id = p.skill_id"""

# What watchers receive over NOTIFY for an operation change (see the progress listener).
_PROGRESS_EVENT: Final = """'operation_id', operation_id, 'seq', seq, 'state', state,
    'stage', stage, 'bytes_done', bytes_done, 'bytes_total', bytes_total,
    'message', left(message, 500), 'time', update_time, 'version', version"""

INSERT_DEFINITION: Final = f"""
INSERT INTO skill_definitions (skill_id, tenant, display_name, description, active, public)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_DEFINITION}
"""

# $2 is the caller's tenant, or NULL for an admin who sees every definition.
GET_DEFINITION: Final = f"""
SELECT {_DEFINITION}
FROM skill_definitions
WHERE skill_id = $1 AND ($2::text IS NULL OR tenant = $2 OR public)
"""

LIST_DEFINITIONS: Final = f"""
SELECT {_DEFINITION}
FROM skill_definitions
WHERE ($1::text IS NULL OR tenant = $1 OR public)
  AND ($2 OR active)
  AND skill_id > $3
ORDER BY skill_id
LIMIT $4
"""

UPDATE_DEFINITION: Final = f"""
UPDATE skill_definitions SET
    display_name = COALESCE($2, display_name),
    description  = COALESCE($3, description),
    active       = COALESCE($4, active),
    public       = COALESCE($5, public),
    update_time  = now()
WHERE skill_id = $1
RETURNING {_DEFINITION}
"""

DELETE_DEFINITION: Final = "DELETE FROM skill_definitions WHERE skill_id = $1"

# -- operations (the install log) ------------------------------------------------

INSERT_OPERATION: Final = f"""
INSERT INTO skill_install_logs (
    operation_id, type, skill_id, version, state, stage, attempt, retry_of, bytes_total,
    requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, from_version, to_version, reason, requested_version,
    bytes_done)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22, $23)
ON CONFLICT (skill_id, request_id) WHERE request_id <> '' DO NOTHING
RETURNING {_OPERATION}
"""

# INSERT_OPERATION for an install, only if its skill's definition exists and, with
# $24 set (a publisher's tenant), belongs to that tenant: the definition lookup of the
# RPC and its operation's row in one statement. No row: the caller finds out why.
INSERT_MANAGED_OPERATION: Final = f"""
INSERT INTO skill_install_logs (
    operation_id, type, skill_id, version, state, stage, attempt, retry_of, bytes_total,
    requested_by, source_type, source_uri, expected_sha256, activate, request_id,
    archive_sha256, owner, message, from_version, to_version, reason, requested_version,
    bytes_done)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
       $19, $20, $21, $22, $23
FROM skill_definitions d
WHERE d.skill_id = $3 AND ($24::text IS NULL OR (d.tenant = $24 AND d.tenant <> ''))
ON CONFLICT (skill_id, request_id) WHERE request_id <> '' DO NOTHING
RETURNING {_OPERATION}
"""

GET_OPERATION_BY_REQUEST_ID: Final = f"""
SELECT {_OPERATION}
FROM skill_install_logs WHERE skill_id = $1 AND request_id = $2 AND request_id <> ''
"""

# $2: the caller's tenant, or NULL for an admin (see GET_DEFINITION).
GET_OPERATION: Final = f"""
SELECT {_OPERATION_O}
FROM skill_install_logs o JOIN skill_definitions d ON d.skill_id = o.skill_id
WHERE o.operation_id = $1 AND ($2::text IS NULL OR d.tenant = $2 OR d.public)
"""

# Newest first; the page position is (create_time, operation_id) of the last row.
LIST_OPERATIONS: Final = f"""
SELECT {_OPERATION}
FROM skill_install_logs
WHERE skill_id = $1
  AND ($2::timestamptz IS NULL OR (create_time, operation_id) < ($2, $3::uuid))
ORDER BY create_time DESC, operation_id DESC
LIMIT $4
"""

# One statement changes the row, bumps seq and notifies watchers (NOTIFY is sent when
# the surrounding transaction commits). NULL parameters leave a column unchanged.
UPDATE_OPERATION: Final = f"""
WITH changed AS (
    UPDATE skill_install_logs SET
        state          = COALESCE($2, state),
        stage          = COALESCE($3, stage),
        version        = COALESCE($4, version),
        bytes_done     = COALESCE($5, bytes_done),
        bytes_total    = COALESCE($6, bytes_total),
        message        = COALESCE($7, message),
        error_code     = COALESCE($8, error_code),
        error_reason   = COALESCE($9, error_reason),
        error_message  = COALESCE($10, error_message),
        error_details  = COALESCE($11::jsonb, error_details),
        archive_sha256 = COALESCE($12, archive_sha256),
        to_version     = COALESCE($13, to_version),
        seq            = seq + 1,
        update_time    = clock_timestamp()
    -- A finished operation never changes again (not even by a process that another
    -- one has, perhaps wrongly, declared dead and reaped).
    WHERE operation_id = $1 AND state IN ('PENDING', 'RUNNING')
    RETURNING {_OPERATION}
)
SELECT changed.*, pg_notify($14, json_build_object(
    {_PROGRESS_EVENT})::text) AS notified
FROM changed
"""

# Start-up and periodic recovery: fail what dead processes left unfinished.
REAP_OPERATIONS: Final = f"""
WITH reaped AS (
    UPDATE skill_install_logs SET
        state = 'FAILED', stage = 'FAILED', error_code = 'ABORTED', error_reason = 'INTERRUPTED',
        error_message = 'interrupted: the server running this operation stopped',
        message = 'interrupted', seq = seq + 1, update_time = clock_timestamp()
    WHERE state IN ('PENDING', 'RUNNING') AND owner = ANY($1::text[])
    RETURNING {_OPERATION}
)
SELECT reaped.*, pg_notify($2, json_build_object(
    {_PROGRESS_EVENT})::text) AS notified
FROM reaped
"""

# -- packages -----------------------------------------------------------------------

# Serialises every change to one skill's packages and current version.
LOCK_SKILL: Final = "SELECT pg_advisory_xact_lock(hashtextextended('skillsvc:skill:' || $1, 0))"

# Orders the removal of an archive against an install committing the same bytes.
LOCK_BLOB: Final = "SELECT pg_advisory_xact_lock(hashtextextended('skillsvc:blob:' || $1, 0))"

# Both, skill first (the order every other taker follows), in one round trip.
LOCK_SKILL_AND_BLOB: Final = """
SELECT pg_advisory_xact_lock(hashtextextended('skillsvc:skill:' || $1, 0)),
       pg_advisory_xact_lock(hashtextextended('skillsvc:blob:' || $2, 0))
"""

GET_PACKAGE_FOR_UPDATE: Final = f"""
SELECT {_PACKAGE}
WHERE p.skill_id = $1 AND p.version = $2
FOR UPDATE OF p
"""

# A claim in one statement for its common case: the version's row (locked; NULL
# columns when there is none) and the skill's live versions for its quota (all but
# FAILED: those hold no files and may be installed again) are read, and when there is
# no row and the quota ($6) allows one more, the row is created INSTALLING for
# operation $5 (``claimed`` 1). Every other case (a READY, FAILED or held row, a full
# quota) is left to the caller, who saw what was read. Run under the skill's lock,
# taken by an earlier statement so that this one's snapshot sees every claim
# committed before it.
CLAIM_NEW_PACKAGE: Final = f"""
WITH live AS (
    SELECT count(*) AS versions FROM skill_packages WHERE skill_id = $1 AND state <> 'FAILED'
),
existing AS (SELECT {_PACKAGE} WHERE p.skill_id = $1 AND p.version = $2 FOR UPDATE OF p),
claimed AS (
    INSERT INTO skill_packages (skill_id, version, state, source_type, source_uri, operation_id)
    SELECT $1, $2, 'INSTALLING', $3, $4, $5 FROM live
    WHERE live.versions < $6 AND NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (skill_id, version) DO NOTHING
    RETURNING 1
)
SELECT live.versions AS live_versions, (SELECT count(*) FROM claimed) AS claimed, e.*
FROM live LEFT JOIN existing e ON true
"""

# The lock and CLAIM_NEW_PACKAGE's common case in one statement, outside a transaction
# (migrations/0008_claim_function.sql): true when it created the INSTALLING row.
CLAIM_VERSION: Final = "SELECT skillsvc_claim_version($1, $2, $3, $4, $5, $6)"

GET_PACKAGE: Final = f"""
SELECT {_PACKAGE}
WHERE p.skill_id = $1 AND p.version = $2 AND ($3::text IS NULL OR d.tenant = $3 OR d.public)
"""

# $2 NULL: the skill's current version.
GET_PACKAGE_OR_CURRENT: Final = f"""
SELECT {_PACKAGE}
WHERE p.skill_id = $1 AND p.version = COALESCE($2, d.current_version)
  AND ($3::text IS NULL OR d.tenant = $3 OR d.public)
"""

LIST_PACKAGES: Final = f"""
SELECT {_PACKAGE}
WHERE p.skill_id = $1
  AND ($2::timestamptz IS NULL OR (p.create_time, p.version) < ($2, $3::text))
ORDER BY p.create_time DESC, p.version DESC
LIMIT $4
"""

UPSERT_PACKAGE_CLAIM: Final = """
INSERT INTO skill_packages (skill_id, version, state, source_type, source_uri, operation_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (skill_id, version) DO UPDATE SET
    state = EXCLUDED.state, source_type = EXCLUDED.source_type,
    source_uri = EXCLUDED.source_uri, operation_id = EXCLUDED.operation_id,
    sha256 = '', size_bytes = 0, unpacked_bytes = 0, file_count = 0, manifest = '{}',
    files = '[]', path = '', create_time = now(), update_time = now()
"""

# READY, with $11 current as well (as SET_CURRENT_VERSION does, recorded as an
# install's activation), and the operation DONE (as UPDATE_OPERATION would write it,
# with $12 as its message), in one statement. The operation ends only if the claim
# held and it was still unfinished; the two counts say which failed. $13 is the
# progress channel, $14 the catalog channel (both sent when the transaction commits).
# Order matters: a replica must drop its cached rows before any watcher hears DONE,
# and one connection hears both channels in the order they were queued. The catalog
# triggers of the updates above fire only when the statement ends, after the DONE
# notification, so the catalog one is queued here first (the CASE evaluates it before
# DONE's); PostgreSQL folds the triggers' identical payloads into it.
MARK_PACKAGE_READY_AND_DONE: Final = f"""
WITH ready AS (
    UPDATE skill_packages SET
        state = 'READY', sha256 = $3, size_bytes = $4, unpacked_bytes = $5, file_count = $6,
        manifest = $7::jsonb, files = $8::jsonb, path = $9, update_time = now()
    WHERE skill_id = $1 AND version = $2 AND operation_id = $10
    RETURNING skill_id
),
previous AS (SELECT current_version FROM skill_definitions WHERE skill_id = $1),
made_current AS (
    UPDATE skill_definitions SET current_version = $2, update_time = now()
    WHERE skill_id = $1 AND $11::boolean AND EXISTS (SELECT 1 FROM ready)
),
activated AS (
    INSERT INTO skill_activations (skill_id, version, previous_version, operation_id, kind)
    SELECT $1, $2, previous.current_version, $10, 'INSTALL' FROM previous
    WHERE $11::boolean AND EXISTS (SELECT 1 FROM ready)
),
done AS (
    UPDATE skill_install_logs SET
        state = 'SUCCEEDED', stage = 'DONE', version = $2, message = $12,
        seq = seq + 1, update_time = clock_timestamp()
    WHERE operation_id = $10 AND state IN ('PENDING', 'RUNNING')
      AND EXISTS (SELECT 1 FROM ready)
    RETURNING {_OPERATION}
),
catalog AS (SELECT pg_notify($14, $1) WHERE EXISTS (SELECT 1 FROM ready))
SELECT (SELECT count(*) FROM ready) AS readied,
       (SELECT count(*) FROM done) AS finished,
       CASE WHEN (SELECT count(*) FROM catalog) >= 0 THEN
           (SELECT pg_notify($13, json_build_object({_PROGRESS_EVENT})::text) FROM done)
       END AS notified
"""

# Release a claim that did not make it to READY.
MARK_PACKAGE_FAILED: Final = """
UPDATE skill_packages SET state = 'FAILED', update_time = now()
WHERE skill_id = $1 AND version = $2 AND operation_id = $3 AND state <> 'READY'
"""

GET_PACKAGE_FILES: Final = """
SELECT files FROM skill_packages WHERE skill_id = $1 AND version = $2
"""

SET_CURRENT_VERSION: Final = """
WITH previous AS (SELECT current_version FROM skill_definitions WHERE skill_id = $1),
updated AS (
    UPDATE skill_definitions SET current_version = $2, update_time = now() WHERE skill_id = $1
)
INSERT INTO skill_activations (skill_id, version, previous_version, operation_id, kind)
SELECT $1, $2, previous.current_version, $3, $4 FROM previous
"""

# -- server processes ---------------------------------------------------------------

REGISTER_INSTANCE: Final = """
INSERT INTO skill_instances (instance_id, hostname, pid) VALUES ($1, $2, $3)
ON CONFLICT (instance_id) DO UPDATE SET heartbeat_time = now()
"""

HEARTBEAT: Final = "UPDATE skill_instances SET heartbeat_time = now() WHERE instance_id = $1"

LIST_INSTANCES: Final = """
SELECT instance_id, hostname, pid, now() - heartbeat_time > make_interval(secs => $1) AS stale
FROM skill_instances
"""

DELETE_INSTANCES: Final = "DELETE FROM skill_instances WHERE instance_id = ANY($1::text[])"

UNFINISHED_OWNERS: Final = """
SELECT DISTINCT owner FROM skill_install_logs WHERE state IN ('PENDING', 'RUNNING')
"""

DELETE_PACKAGE: Final = "DELETE FROM skill_packages WHERE skill_id = $1 AND version = $2"

DELETE_SKILL_PACKAGES: Final = """
WITH cleared AS (
    UPDATE skill_definitions SET current_version = NULL WHERE skill_id = $1
)
DELETE FROM skill_packages WHERE skill_id = $1
"""

# Newest first: the activation history that Rollback walks back.
LIST_ACTIVATIONS: Final = """
SELECT version, previous_version, kind FROM skill_activations
WHERE skill_id = $1 ORDER BY activation_id DESC
"""

# Is an archive in blobs/ still some package's original?
BLOB_IN_USE: Final = "SELECT EXISTS (SELECT 1 FROM skill_packages WHERE sha256 = $1)"

# Every skill's current version with its archive digest (NULL unless READY).
LIST_CURRENT_VERSIONS: Final = """
SELECT d.skill_id, d.current_version, p.sha256
FROM skill_definitions d
LEFT JOIN skill_packages p
       ON p.skill_id = d.skill_id AND p.version = d.current_version AND p.state = 'READY'
"""

# Materialisation: one skill's current package and every version it has a row for; no
# row when the definition is gone. The age of the latest activation is measured by the
# database's clock, so replicas with skewed clocks report their lag truthfully.
SKILL_SYNC_STATE: Final = """
SELECT d.current_version, p.sha256, p.size_bytes, p.unpacked_bytes, p.file_count,
       extract(epoch FROM clock_timestamp() - (
           SELECT a.activated_at FROM skill_activations a
           WHERE a.skill_id = d.skill_id ORDER BY a.activation_id DESC LIMIT 1
       ))::float8 AS change_age,
       ARRAY(SELECT v.version FROM skill_packages v WHERE v.skill_id = d.skill_id) AS versions
FROM skill_definitions d
LEFT JOIN skill_packages p
       ON p.skill_id = d.skill_id AND p.version = d.current_version AND p.state = 'READY'
WHERE d.skill_id = $1
"""

PING: Final = "SELECT 1"

# Garbage collection: a FAILED package row past the retention, under the skill's lock.
DELETE_FAILED_PACKAGE: Final = """
DELETE FROM skill_packages WHERE skill_id = $1 AND version = $2 AND state = 'FAILED'
"""
