-- +goose Up
ALTER TABLE projects ADD CONSTRAINT projects_name_len
    CHECK (char_length(name) < 200) NOT VALID;

-- +goose Down
ALTER TABLE projects DROP CONSTRAINT projects_name_len;
