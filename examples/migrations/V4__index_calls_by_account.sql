CREATE INDEX calls_account_id_idx ON calls (account_id, started_at);
