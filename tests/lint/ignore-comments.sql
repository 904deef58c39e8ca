-- squawk-ignore require-concurrent-index-creation
CREATE INDEX orders_total ON orders (total);
/* squawk-ignore changing-column-type, prefer-robust-stmts */
ALTER TABLE orders ALTER COLUMN total TYPE bigint;
-- squawk-ignore prefer-timestamptz
ALTER TABLE orders ADD COLUMN shipped timestamp;
ALTER TABLE orders ALTER COLUMN note SET NOT NULL;
