-- Repeatable: runs after the versioned migrations, again whenever it changes.
CREATE OR REPLACE VIEW ${schema}.org_overview AS
    SELECT o.id, o.name, count(p.id) AS projects
    FROM orgs o LEFT JOIN projects p ON p.org_id = o.id
    GROUP BY o.id, o.name;
