-- migrate:up
ALTER TYPE user_role ADD VALUE 'owner';

-- migrate:down
SELECT 1; -- enum values cannot be dropped
