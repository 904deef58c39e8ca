ALTER TABLE orders ADD CONSTRAINT orders_positive CHECK (total > 0);
