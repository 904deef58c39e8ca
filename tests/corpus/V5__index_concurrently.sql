-- No marker: PostgreSQL refuses this in a transaction, so it runs alone.
CREATE INDEX CONCURRENTLY IF NOT EXISTS person_mood ON person (current_mood);
