CREATE VIEW ${schema}.active_users AS
    SELECT u.id, u.email, o.name AS org
    FROM users u JOIN orgs o ON o.id = u.org_id;
