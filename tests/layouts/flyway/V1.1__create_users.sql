CREATE TABLE users (
    id bigserial PRIMARY KEY,
    org_id bigint NOT NULL REFERENCES orgs (id),
    email text NOT NULL
);
CREATE INDEX users_org_id ON users (org_id);
