CREATE TABLE projects (
    id bigserial PRIMARY KEY,
    org_id bigint NOT NULL REFERENCES orgs (id),
    name text NOT NULL,
    archived boolean NOT NULL DEFAULT false
);
