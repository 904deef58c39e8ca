CREATE TABLE codes (code char(3));
