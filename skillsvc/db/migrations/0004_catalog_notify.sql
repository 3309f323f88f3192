-- Every change to a definition or a package (create, update, delete; READY, FAILED,
-- current version) announces its skill on the `skillsvc_catalog` channel, so each
-- process can drop what its read cache holds for that skill. A trigger sends it inside
-- the writing transaction (delivered on commit, never for a rolled-back write) whatever
-- statement made the change: the service, `fsck --repair`, `restore`, or an operator's
-- SQL. PostgreSQL folds identical payloads of one transaction into one notification.
CREATE FUNCTION skillsvc_notify_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('skillsvc_catalog', CASE WHEN TG_OP = 'DELETE' THEN OLD.skill_id
                                               ELSE NEW.skill_id END);
    RETURN NULL;
END
$$;

CREATE TRIGGER skill_definitions_notify_catalog
    AFTER INSERT OR UPDATE OR DELETE ON skill_definitions
    FOR EACH ROW EXECUTE FUNCTION skillsvc_notify_catalog();

CREATE TRIGGER skill_packages_notify_catalog
    AFTER INSERT OR UPDATE OR DELETE ON skill_packages
    FOR EACH ROW EXECUTE FUNCTION skillsvc_notify_catalog();
