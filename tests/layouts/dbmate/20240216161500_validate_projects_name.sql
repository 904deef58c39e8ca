-- migrate:up
ALTER TABLE projects VALIDATE CONSTRAINT projects_name_len;

-- migrate:down
SELECT 1;
