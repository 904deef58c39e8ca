-- +goose NO TRANSACTION
-- +goose Up
CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (lower(email));

-- +goose Down
DROP INDEX CONCURRENTLY users_email_key;
