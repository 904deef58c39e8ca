-- A SQL-standard function body: its semicolons do not end the statement.
CREATE OR REPLACE FUNCTION mood_rank(m mood) RETURNS int
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT CASE m
        WHEN 'sad' THEN 0
        WHEN 'ok' THEN 1
        ELSE 2
    END;
END;

CREATE PROCEDURE add_tag(i int, l text)
LANGUAGE sql
BEGIN ATOMIC
    INSERT INTO tag VALUES (i, l);
    UPDATE tag SET label = label || ';' WHERE id = i;
END;

CREATE VIEW happy_people AS
    SELECT id, "full;name" FROM person WHERE mood_rank(current_mood) = 2;
