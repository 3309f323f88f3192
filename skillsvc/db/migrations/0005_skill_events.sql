-- The change log behind WatchSkills (SPEC §4): one row per change of a definition or a
-- package, written by triggers in the writing transaction whatever made the change
-- (the service, `fsck --repair`, `restore`, an operator's SQL).
--
-- Sequence numbers and commit order: a number taken from a sequence in a transaction
-- that commits late would appear below numbers a reader has already handed out, and
-- a reader following "seq > last" would skip it. So writers do not number events:
-- they insert them with `seq` NULL (in `id` order) and NOTIFY `skillsvc_events`. A
-- reader then publishes with skillsvc_publish_events(), which numbers every committed
-- unnumbered event while holding the row lock of skill_event_head until its own
-- commit. Publishers are therefore serialised, and each commits numbers above all
-- numbers committed before it: the numbered events any snapshot sees are exactly
-- 1..head, with no gap and nothing still to come below head. `seq > last` is then
-- safe, and a gap below head can only mean pruning (OUT_OF_RANGE).

CREATE TABLE skill_events (
    -- Insertion order (internal): publishers number events in this order, so the
    -- changes of one skill, which its row locks serialise, keep their order.
    id              bigserial   PRIMARY KEY,
    -- The public position, dense from 1; NULL until published.
    seq             bigint      UNIQUE,
    skill_id        text        NOT NULL,
    -- The definition's owner and visibility when the change was made: whom the event
    -- may be shown to (SPEC §7) even after the definition changed or went.
    tenant          text        NOT NULL,
    public          boolean     NOT NULL,
    type            text        NOT NULL
                    CONSTRAINT skill_events_type_check CHECK (type IN (
                        'DEFINITION_CREATED', 'DEFINITION_UPDATED', 'DEFINITION_DELETED',
                        'PACKAGE_READY', 'PACKAGE_DELETED', 'CURRENT_CHANGED')),
    -- PACKAGE_*: the package's version; CURRENT_CHANGED: the new current version.
    version         text        NOT NULL DEFAULT '',
    -- CURRENT_CHANGED: the current version before and after ('' = none).
    from_version    text        NOT NULL DEFAULT '',
    to_version      text        NOT NULL DEFAULT '',
    -- The writing transaction (for operators: which changes were made together).
    xid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    time            timestamptz NOT NULL DEFAULT now()
);

-- Publishers find what is still unnumbered.
CREATE INDEX skill_events_unpublished_idx ON skill_events (id) WHERE seq IS NULL;

-- The highest published seq; its row lock serialises publishers. Kept apart from the
-- events so pruning every event never lets numbering start again.
CREATE TABLE skill_event_head (
    one             boolean     PRIMARY KEY DEFAULT true CHECK (one),
    seq             bigint      NOT NULL
);
INSERT INTO skill_event_head (seq) VALUES (0);

CREATE FUNCTION skillsvc_publish_events() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
    published bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM skill_events WHERE seq IS NULL) THEN
        RETURN (SELECT seq FROM skill_event_head);
    END IF;
    SELECT seq INTO head FROM skill_event_head FOR UPDATE;
    -- A new statement, so a new snapshot taken after the lock: it sees everything the
    -- previous publisher committed and numbers only what is still unnumbered.
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM skill_events WHERE seq IS NULL
    )
    UPDATE skill_events e SET seq = head + p.n FROM pending p WHERE e.id = p.id;
    GET DIAGNOSTICS published = ROW_COUNT;
    UPDATE skill_event_head SET seq = head + published;
    RETURN head + published;
END
$$;

CREATE FUNCTION skillsvc_definition_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO skill_events (skill_id, tenant, public, type)
        VALUES (NEW.skill_id, NEW.tenant, NEW.public, 'DEFINITION_CREATED');
        IF NEW.current_version IS NOT NULL THEN
            INSERT INTO skill_events (skill_id, tenant, public, type, version, to_version)
            VALUES (NEW.skill_id, NEW.tenant, NEW.public, 'CURRENT_CHANGED',
                    NEW.current_version, NEW.current_version);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO skill_events (skill_id, tenant, public, type)
        VALUES (OLD.skill_id, OLD.tenant, OLD.public, 'DEFINITION_DELETED');
    ELSE
        -- Shown to whoever could see the definition before or after the change, so a
        -- tenant learns that a public skill it used went private.
        IF (OLD.display_name, OLD.description, OLD.active, OLD.public, OLD.tenant)
           IS DISTINCT FROM (NEW.display_name, NEW.description, NEW.active, NEW.public, NEW.tenant)
        THEN
            INSERT INTO skill_events (skill_id, tenant, public, type)
            VALUES (NEW.skill_id, NEW.tenant, OLD.public OR NEW.public, 'DEFINITION_UPDATED');
        END IF;
        IF OLD.current_version IS DISTINCT FROM NEW.current_version THEN
            INSERT INTO skill_events
                (skill_id, tenant, public, type, version, from_version, to_version)
            VALUES (NEW.skill_id, NEW.tenant, NEW.public, 'CURRENT_CHANGED',
                    COALESCE(NEW.current_version, ''), COALESCE(OLD.current_version, ''),
                    COALESCE(NEW.current_version, ''));
        END IF;
    END IF;
    PERFORM pg_notify('skillsvc_events', '');
    RETURN NULL;
END
$$;

CREATE FUNCTION skillsvc_package_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner_tenant text;
    owner_public boolean;
    row_skill text := CASE WHEN TG_OP = 'DELETE' THEN OLD.skill_id ELSE NEW.skill_id END;
BEGIN
    -- The foreign key keeps the definition in place while any of its packages exists.
    SELECT tenant, public INTO owner_tenant, owner_public
    FROM skill_definitions WHERE skill_id = row_skill;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO skill_events (skill_id, tenant, public, type, version)
        VALUES (OLD.skill_id, COALESCE(owner_tenant, ''), COALESCE(owner_public, false),
                'PACKAGE_DELETED', OLD.version);
    ELSE
        INSERT INTO skill_events (skill_id, tenant, public, type, version)
        VALUES (NEW.skill_id, COALESCE(owner_tenant, ''), COALESCE(owner_public, false),
                'PACKAGE_READY', NEW.version);
    END IF;
    PERFORM pg_notify('skillsvc_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER skill_definitions_events
    AFTER INSERT OR UPDATE OR DELETE ON skill_definitions
    FOR EACH ROW EXECUTE FUNCTION skillsvc_definition_events();

-- Only the changes watchers are told about fire the function: a version becoming
-- READY (inserted so, or updated to it) and a READY version's removal. The many
-- updates of an install in progress cost nothing here.
CREATE TRIGGER skill_packages_events_insert
    AFTER INSERT ON skill_packages
    FOR EACH ROW WHEN (NEW.state = 'READY')
    EXECUTE FUNCTION skillsvc_package_events();
CREATE TRIGGER skill_packages_events_update
    AFTER UPDATE ON skill_packages
    FOR EACH ROW WHEN (NEW.state = 'READY' AND OLD.state IS DISTINCT FROM 'READY')
    EXECUTE FUNCTION skillsvc_package_events();
CREATE TRIGGER skill_packages_events_delete
    AFTER DELETE ON skill_packages
    FOR EACH ROW WHEN (OLD.state = 'READY')
    EXECUTE FUNCTION skillsvc_package_events();

-- Pruning keeps a suffix of the history: the oldest retained seq defines OUT_OF_RANGE.
CREATE INDEX skill_events_time_idx ON skill_events (time) WHERE seq IS NOT NULL;
