-- +goose Up
ALTER TYPE user_role ADD VALUE 'owner';

-- +goose Down
SELECT 1; -- enum values cannot be dropped
