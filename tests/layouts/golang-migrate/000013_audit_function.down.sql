DROP TRIGGER projects_audit ON projects;
DROP FUNCTION audit();
