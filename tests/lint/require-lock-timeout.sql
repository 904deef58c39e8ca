-- Off by default while safe DDL gives each attempt a lock_timeout.
ALTER TABLE orders DROP CONSTRAINT orders_positive;
