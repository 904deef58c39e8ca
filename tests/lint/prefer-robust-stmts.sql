-- miglock:no-transaction
CREATE TABLE notes (id bigint PRIMARY KEY);
CREATE INDEX CONCURRENTLY notes_id ON notes (id);
