-- migrate:up
INSERT INTO orgs (name) VALUES ('Acme; Inc.'), ('O''Brien & Sons'), ($q$Dollar $$ quoted$q$);

-- migrate:down
DELETE FROM orgs WHERE name IN ('Acme; Inc.', 'O''Brien & Sons', $q$Dollar $$ quoted$q$);
