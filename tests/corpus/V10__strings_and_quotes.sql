CREATE TABLE "odd;table" ("a""b" text DEFAULT U&'d\0061t\+000061;');
INSERT INTO "odd;table" VALUES ('back\slash;'), (E'esc\\aped\';'), ($q$dollar;'"$q$), ($$x$1$$);
CREATE FUNCTION add_one(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1;';
SELECT 1e2, x'1f', b'101', 'a' -- trailing; comment
;
