-- migrate:up
ALTER TABLE projects ADD CONSTRAINT projects_name_len
    CHECK (char_length(name) < 200) NOT VALID;

-- migrate:down
ALTER TABLE projects DROP CONSTRAINT projects_name_len;
