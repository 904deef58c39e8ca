-- +goose Up
INSERT INTO orgs (name) VALUES ('Acme; Inc.'), ('O''Brien & Sons'), ($q$Dollar $$ quoted$q$);

-- +goose Down
DELETE FROM orgs WHERE name IN ('Acme; Inc.', 'O''Brien & Sons', $q$Dollar $$ quoted$q$);
