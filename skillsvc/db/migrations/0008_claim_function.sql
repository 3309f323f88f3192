-- The common claim of an install in one statement: take the skill's lock, then create
-- the version's INSTALLING row if the version has no row and the skill's live versions
-- are within the quota, and name the version on the operation. Called on its own (an implicit transaction), it replaces
-- BEGIN, lock, claim, COMMIT: four round trips become one. True when it claimed;
-- false leaves every other case (READY, busy, FAILED, over quota) to the full claim
-- in a transaction, which reads what is there and decides.
--
-- The lock key must equal LOCK_SKILL's in skillsvc/db/_queries.py. The function is
-- VOLATILE, so its INSERT takes a new snapshot after the lock is held (READ COMMITTED):
-- it counts every version committed by the lock's previous holder.
CREATE FUNCTION skillsvc_claim_version(
    p_skill_id text,
    p_version text,
    p_source_type text,
    p_source_uri text,
    p_operation_id uuid,
    p_max_live_versions integer
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('skillsvc:skill:' || p_skill_id, 0));
    INSERT INTO skill_packages (skill_id, version, state, source_type, source_uri, operation_id)
    SELECT p_skill_id, p_version, 'INSTALLING', p_source_type, p_source_uri, p_operation_id
    WHERE (SELECT count(*) FROM skill_packages
           WHERE skill_id = p_skill_id AND state <> 'FAILED') < p_max_live_versions
    ON CONFLICT (skill_id, version) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The version goes on the operation in the claim's transaction (a version read
    -- from the manifest), so recovery always knows which claim to release. Watchers
    -- hear of it with the next stage the install writes.
    UPDATE skill_install_logs SET version = p_version
    WHERE operation_id = p_operation_id AND version IS DISTINCT FROM p_version;
    RETURN true;
END
$$;
