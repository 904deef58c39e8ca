-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY projects_org_id ON projects (org_id);

-- migrate:down
DROP INDEX CONCURRENTLY projects_org_id;
