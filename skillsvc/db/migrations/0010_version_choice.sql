-- What a versionless install needs to choose its version, read under the skill's lock
-- in one statement (it replaces the lock and three reads: four round trips become
-- one). Called inside the transaction that then claims the chosen version, so the lock
-- is held until that transaction ends and two installs of one skill never get the same
-- version. The lock key must equal LOCK_SKILL's in skillsvc/db/_queries.py; the
-- function is VOLATILE, so each read takes its snapshot after the lock is held (READ
-- COMMITTED, which the service pins on its connections).
--
-- identical:     a READY package of the skill with the same archive digest (the
--                current one first, then the newest): an identical re-upload;
-- versions:      every version the skill has or had: its packages in any state (an
--                INSTALLING claim included) and those of succeeded installs whose package
--                was deleted since, so an assigned version is never handed out twice;
-- live_versions: how many versions count against the skill's quota (all but FAILED).
CREATE FUNCTION skillsvc_version_choice(
    p_skill_id text,
    p_sha256 text,
    OUT identical text,
    OUT versions text[],
    OUT live_versions bigint
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('skillsvc:skill:' || p_skill_id, 0));
    SELECT p.version INTO identical
    FROM skill_packages p JOIN skill_definitions d ON d.skill_id = p.skill_id
    WHERE p.skill_id = p_skill_id AND p.sha256 = p_sha256 AND p.state = 'READY'
    ORDER BY (d.current_version IS NOT DISTINCT FROM p.version) DESC, p.create_time DESC
    LIMIT 1;
    SELECT coalesce(array_agg(v.version), '{}') INTO versions FROM (
        SELECT version FROM skill_packages WHERE skill_id = p_skill_id
        UNION
        SELECT version FROM skill_install_logs
        WHERE skill_id = p_skill_id AND type = 'INSTALL' AND state = 'SUCCEEDED'
          AND version <> ''
    ) AS v;
    SELECT count(*) INTO live_versions
    FROM skill_packages WHERE skill_id = p_skill_id AND state <> 'FAILED';
END
$$;
