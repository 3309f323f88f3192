-- The install pipeline: progress sequence numbers, process liveness, activation history.

-- Every change of an operation increments seq; progress watchers use it to drop
-- events they have already seen, whether read from the table or from NOTIFY.
ALTER TABLE skill_install_logs ADD COLUMN seq bigint NOT NULL DEFAULT 1;
-- The last human-readable progress message.
ALTER TABLE skill_install_logs ADD COLUMN message text NOT NULL DEFAULT '';
-- Digest of the bytes received for this attempt (kept for retries).
ALTER TABLE skill_install_logs ADD COLUMN archive_sha256 text NOT NULL DEFAULT '';
-- Liveness is tracked per owning process (skill_instances), not per operation.
ALTER TABLE skill_install_logs DROP COLUMN heartbeat_time;

-- The operation that currently holds (or last held) a package version.
ALTER TABLE skill_packages ADD COLUMN operation_id uuid;

-- Server processes and their last sign of life. An operation whose owner is gone is
-- reaped (FAILED, ABORTED "interrupted") by any live process.
CREATE TABLE skill_instances (
    instance_id     text        PRIMARY KEY,
    hostname        text        NOT NULL,
    pid             integer     NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_time  timestamptz NOT NULL DEFAULT now()
);

-- Every change of a skill's current version, newest last: install activations and
-- rollbacks. Rollback walks it backwards to find the last known-good version.
CREATE TABLE skill_activations (
    activation_id    bigserial   PRIMARY KEY,
    skill_id         text        NOT NULL REFERENCES skill_definitions (skill_id) ON DELETE CASCADE,
    version          text        NOT NULL,
    previous_version text,
    operation_id     uuid,
    kind             text        NOT NULL
                     CONSTRAINT skill_activations_kind_check CHECK (kind IN ('INSTALL', 'ROLLBACK')),
    activated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX skill_activations_skill_idx ON skill_activations (skill_id, activation_id DESC);
