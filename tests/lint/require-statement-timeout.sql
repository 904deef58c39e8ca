-- Off by default: miglock sets statement_timeout itself.
ALTER TABLE orders ADD COLUMN note4 text;
