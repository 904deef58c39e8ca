ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();
-- A constant default is stored in the catalog: no rewrite, no finding.
ALTER TABLE orders ADD COLUMN flag boolean DEFAULT false;
