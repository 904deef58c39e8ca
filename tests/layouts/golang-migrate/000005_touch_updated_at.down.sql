DROP TRIGGER users_touch ON users;
DROP FUNCTION touch_updated_at();
ALTER TABLE users DROP COLUMN updated_at;
