COMMENT ON TABLE users IS 'People; who sign in';
COMMENT ON COLUMN users.email IS 'Lower-cased -- never null';
