-- The index build takes a SHARE lock: no writes to orders until it ends.
CREATE INDEX orders_placed ON orders (placed_at);
