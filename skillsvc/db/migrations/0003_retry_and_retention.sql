-- Retries re-run an install from its original request, so keep what was asked for.

-- The version the caller asked for (empty: from the manifest). Operation.version may
-- later be filled in from the manifest; a retry must ask the same question again.
ALTER TABLE skill_install_logs ADD COLUMN requested_version text NOT NULL DEFAULT '';
UPDATE skill_install_logs SET requested_version = version WHERE type = 'INSTALL';

-- Garbage collection and `skillsvc status` scan the log by time and state.
CREATE INDEX skill_install_logs_state_time_idx ON skill_install_logs (state, update_time);
