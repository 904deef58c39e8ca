-- +goose Up
COMMENT ON TABLE users IS 'People; who sign in';
COMMENT ON COLUMN users.email IS 'Lower-cased (-- never null)';

-- +goose Down
COMMENT ON TABLE users IS NULL;
COMMENT ON COLUMN users.email IS NULL;
