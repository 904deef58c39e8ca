-- Allowed in a transaction since PostgreSQL 12; the new value is used by
-- later migrations only.
ALTER TYPE mood ADD VALUE IF NOT EXISTS 'happy' AFTER 'ok';
