-- migrate:up
COMMENT ON TABLE users IS 'People; who sign in';
COMMENT ON COLUMN users.email IS 'Lower-cased -- never null';

-- migrate:down
COMMENT ON TABLE users IS NULL;
COMMENT ON COLUMN users.email IS NULL;
