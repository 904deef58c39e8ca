ALTER TABLE projects DROP CONSTRAINT projects_name_len;
