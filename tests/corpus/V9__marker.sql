-- miglock:no-transaction
-- Run as psql runs it: the file's own transaction is honoured.
BEGIN;
CREATE TABLE counter (n int);
INSERT INTO counter VALUES (1);
COMMIT;
VACUUM (ANALYZE) counter;
