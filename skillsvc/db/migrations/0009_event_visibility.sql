-- Who may see the change log (SPEC §7: never another tenant's private definitions).
--
-- 0005 tagged each event with the definition's visibility when it was written, so a
-- replay showed every tenant, for the whole retention, the ids and versions of a skill
-- that is private now. Visibility now follows the definition's current state: when a
-- definition stops being visible to some callers (public -> private, or, by an
-- operator's SQL, moved to another tenant while private), its earlier events are
-- re-tagged with the new owner and `public = false` in the same transaction. Only the
-- DEFINITION_UPDATED that narrowed it stays visible to those who could see the skill
-- before (it tells a watcher that knew the skill to drop it; it carries the id only).
--
-- A deletion hides nothing: a deleted definition is no one's private definition, its
-- events were visible to exactly those who could see it until then, and they need the
-- DEFINITION_DELETED to drop it. (A private skill's events were private all along.)
--
-- Why rewrite the rows rather than filter replays against skill_definitions: a skill
-- goes private rarely and has few events, while every replay and every live page is
-- read many times; a deleted definition has no row to join; and the rewrite happens
-- under the definition's row lock, which the package trigger now shares (below), so no
-- event of the skill can be written concurrently with a visibility it no longer has.
-- The rewrite is a plain UPDATE in the writing transaction: under READ COMMITTED (which
-- the service pins on its connections) it sees every event committed before the
-- definition's row lock was granted.

-- The event that narrowed its skill's visibility: watchers holding later pages in
-- memory read them again from the table (skillsvc/core/watch.py).
ALTER TABLE skill_events ADD COLUMN narrows boolean NOT NULL DEFAULT false;

-- The rewrite finds one skill's events.
CREATE INDEX skill_events_skill_idx ON skill_events (skill_id, id);

CREATE OR REPLACE FUNCTION skillsvc_definition_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    narrows boolean;
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
        narrows := NOT NEW.public AND (OLD.public OR OLD.tenant IS DISTINCT FROM NEW.tenant);
        IF narrows THEN
            -- The events of this incarnation of the id (from its last creation on; an
            -- earlier definition of the same id, deleted since, keeps its history).
            UPDATE skill_events SET public = false, tenant = NEW.tenant
            WHERE skill_id = NEW.skill_id
              AND id >= COALESCE((SELECT max(id) FROM skill_events
                                 WHERE skill_id = NEW.skill_id
                                   AND type = 'DEFINITION_CREATED'), 0)
              AND (public OR tenant <> NEW.tenant);
        END IF;
        -- Shown to whoever could see the definition before or after the change, so a
        -- tenant learns that a public skill it used went private.
        IF (OLD.display_name, OLD.description, OLD.active, OLD.public, OLD.tenant)
           IS DISTINCT FROM (NEW.display_name, NEW.description, NEW.active, NEW.public, NEW.tenant)
        THEN
            INSERT INTO skill_events (skill_id, tenant, public, type, narrows)
            VALUES (NEW.skill_id, NEW.tenant, OLD.public OR NEW.public, 'DEFINITION_UPDATED',
                    narrows);
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

-- FOR SHARE: a package event takes the visibility the definition has when the event's
-- transaction commits. Without the lock, a READY committing while the definition goes
-- private read the old `public = true`, and the definition's rewrite above, not seeing
-- the uncommitted event, left it public. With it, whichever transaction locks the
-- definition row second waits for the first: the package event either sees the new
-- visibility or is committed before the rewrite starts, which then re-tags it.
CREATE OR REPLACE FUNCTION skillsvc_package_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner_tenant text;
    owner_public boolean;
    row_skill text := CASE WHEN TG_OP = 'DELETE' THEN OLD.skill_id ELSE NEW.skill_id END;
BEGIN
    -- The foreign key keeps the definition in place while any of its packages exists.
    SELECT tenant, public INTO owner_tenant, owner_public
    FROM skill_definitions WHERE skill_id = row_skill
    FOR SHARE;
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
