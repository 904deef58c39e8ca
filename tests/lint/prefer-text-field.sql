CREATE TABLE names (id bigint PRIMARY KEY, name varchar(100));
