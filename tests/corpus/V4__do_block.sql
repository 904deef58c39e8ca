DO $$
DECLARE
    n int;
BEGIN
    SELECT count(*) INTO n FROM person;
    IF n = 0 THEN
        EXECUTE 'CREATE TABLE audit (at timestamptz, what text DEFAULT ''x;y'')';
    END IF;
END
$$;
DO LANGUAGE plpgsql $do$ BEGIN PERFORM 1; END $do$;
