CREATE INDEX CONCURRENTLY projects_org_id ON projects (org_id);
