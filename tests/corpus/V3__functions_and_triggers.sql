CREATE FUNCTION person_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- semicolons; inside the body
    IF NEW."full;name" = '' THEN
        RAISE EXCEPTION 'empty name; refused';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER person_touch BEFORE INSERT OR UPDATE ON person
    FOR EACH ROW EXECUTE FUNCTION person_touch();

CREATE OR REPLACE FUNCTION greet(who text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $body$
DECLARE
    result text := $$Hello; $$ || who;
BEGIN
    RETURN result || ';';
END
$body$;
