BEGIN;
CREATE INDEX CONCURRENTLY orders_total ON orders (total);
COMMIT;
