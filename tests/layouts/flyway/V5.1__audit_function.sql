CREATE FUNCTION audit() RETURNS trigger
LANGUAGE plpgsql AS $func$
BEGIN
    INSERT INTO audit_log (payload) VALUES (to_jsonb(NEW));
    RETURN NEW;
END;
$func$;
CREATE TRIGGER projects_audit AFTER INSERT ON projects
    FOR EACH ROW EXECUTE FUNCTION audit();
