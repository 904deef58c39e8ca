-- squawk-ignore-file changing-column-type
ALTER TABLE orders ALTER COLUMN total TYPE bigint;
ALTER TABLE orders ALTER COLUMN placed_at TYPE timestamptz;
