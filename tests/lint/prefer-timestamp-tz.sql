CREATE TABLE happenings (id bigint PRIMARY KEY, at timestamp);
