-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY projects_org_id ON projects (org_id);

-- +goose Down
DROP INDEX CONCURRENTLY projects_org_id;
