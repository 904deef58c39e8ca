-- +goose Up
ALTER TABLE users ADD COLUMN updated_at timestamptz;
-- +goose StatementBegin
CREATE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- a comment; with a semicolon
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- +goose Down
DROP TRIGGER users_touch ON users;
DROP FUNCTION touch_updated_at();
ALTER TABLE users DROP COLUMN updated_at;
