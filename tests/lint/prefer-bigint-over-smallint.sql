CREATE TABLE flags (id bigint PRIMARY KEY, f smallint);
