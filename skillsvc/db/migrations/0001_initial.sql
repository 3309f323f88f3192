-- The initial schema: definitions, packages and the install log (SPEC §1).

CREATE TABLE skill_definitions (
    skill_id        text        PRIMARY KEY
                    CONSTRAINT skill_definitions_skill_id_format
                    CHECK (skill_id ~ '^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$' AND skill_id NOT LIKE '%--%'),
    tenant          text        NOT NULL DEFAULT '',
    display_name    text        NOT NULL DEFAULT '',
    description     text        NOT NULL DEFAULT '',
    active          boolean     NOT NULL DEFAULT true,
    public          boolean     NOT NULL,
    current_version text,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now()
);

-- Tenant listings page by skill_id within a tenant.
CREATE INDEX skill_definitions_tenant_idx ON skill_definitions (tenant, skill_id);

CREATE TABLE skill_packages (
    skill_id        text        NOT NULL REFERENCES skill_definitions (skill_id),
    version         text        NOT NULL,
    state           text        NOT NULL
                    CONSTRAINT skill_packages_state_check
                    CHECK (state IN ('PENDING', 'INSTALLING', 'READY', 'FAILED')),
    sha256          text        NOT NULL DEFAULT '',
    size_bytes      bigint      NOT NULL DEFAULT 0,
    unpacked_bytes  bigint      NOT NULL DEFAULT 0,
    file_count      integer     NOT NULL DEFAULT 0,
    source_type     text        NOT NULL
                    CONSTRAINT skill_packages_source_type_check
                    CHECK (source_type IN ('UPLOAD', 'URL')),
    source_uri      text        NOT NULL DEFAULT '',
    manifest        jsonb       NOT NULL DEFAULT '{}',
    -- Per-file digests recorded at install: [{"path", "size", "sha256", "executable"}].
    files           jsonb       NOT NULL DEFAULT '[]',
    path            text        NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT skill_packages_pkey PRIMARY KEY (skill_id, version)
);

-- ListPackages: a skill's packages, newest first.
CREATE INDEX skill_packages_skill_created_idx ON skill_packages (skill_id, create_time DESC, version DESC);

ALTER TABLE skill_definitions
    ADD CONSTRAINT skill_definitions_current_version_fkey
    FOREIGN KEY (skill_id, current_version) REFERENCES skill_packages (skill_id, version)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE skill_install_logs (
    operation_id    uuid        PRIMARY KEY,
    type            text        NOT NULL
                    CONSTRAINT skill_install_logs_type_check CHECK (type IN ('INSTALL', 'ROLLBACK')),
    skill_id        text        NOT NULL REFERENCES skill_definitions (skill_id) ON DELETE CASCADE,
    version         text        NOT NULL DEFAULT '',
    state           text        NOT NULL
                    CONSTRAINT skill_install_logs_state_check
                    CHECK (state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    stage           text        NOT NULL,
    from_version    text        NOT NULL DEFAULT '',
    to_version      text        NOT NULL DEFAULT '',
    reason          text        NOT NULL DEFAULT '',
    attempt         integer     NOT NULL DEFAULT 1,
    retry_of        uuid        REFERENCES skill_install_logs (operation_id) ON DELETE SET NULL,
    -- On failure: the gRPC code name, the stable reason, the message and structured
    -- details (e.g. the validation report) as JSON.
    error_code      text        NOT NULL DEFAULT '',
    error_reason    text        NOT NULL DEFAULT '',
    error_message   text        NOT NULL DEFAULT '',
    error_details   jsonb,
    bytes_done      bigint      NOT NULL DEFAULT 0,
    bytes_total     bigint      NOT NULL DEFAULT 0,
    requested_by    text        NOT NULL DEFAULT '',
    source_type     text        NOT NULL DEFAULT '',
    source_uri      text        NOT NULL DEFAULT '',
    expected_sha256 text        NOT NULL DEFAULT '',
    activate        boolean     NOT NULL DEFAULT true,
    request_id      text        NOT NULL DEFAULT '',
    -- The process running the operation and its last sign of life, so that start-up
    -- recovery only reaps operations of dead owners.
    owner           text        NOT NULL DEFAULT '',
    heartbeat_time  timestamptz,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now()
);

-- ListOperations: the install log of a skill, newest first.
CREATE INDEX skill_install_logs_skill_created_idx
    ON skill_install_logs (skill_id, create_time DESC, operation_id DESC);
-- Recovery scans unfinished operations only.
CREATE INDEX skill_install_logs_unfinished_idx
    ON skill_install_logs (owner) WHERE state IN ('PENDING', 'RUNNING');
-- request_id is an idempotency key per skill.
CREATE UNIQUE INDEX skill_install_logs_request_id_key
    ON skill_install_logs (skill_id, request_id) WHERE request_id <> '';
