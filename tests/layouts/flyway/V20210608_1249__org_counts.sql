CREATE MATERIALIZED VIEW org_counts AS
    SELECT org_id, count(*) AS users FROM users GROUP BY org_id;
CREATE UNIQUE INDEX org_counts_org_id ON org_counts (org_id);
