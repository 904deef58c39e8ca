-- +goose Up
ALTER TABLE projects VALIDATE CONSTRAINT projects_name_len;

-- +goose Down
SELECT 1;
