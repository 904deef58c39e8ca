SELECT 1; -- enum values cannot be dropped
