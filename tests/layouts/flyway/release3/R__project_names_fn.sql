CREATE OR REPLACE FUNCTION project_names(org bigint) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT name FROM projects WHERE org_id = org ORDER BY name;
$$;
