-- A deliberately slow migration (about a second), so that in the demo the
-- other replicas are seen waiting for the lock.
SELECT pg_sleep(1);
INSERT INTO accounts (email)
SELECT 'user' || n || '@example.com' FROM generate_series(1, 1000) AS n;
