ALTER DOMAIN positive_amount ADD CONSTRAINT amount_nonzero CHECK (VALUE <> 0);
