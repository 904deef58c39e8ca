CREATE TABLE counters (id bigint PRIMARY KEY, n int);
