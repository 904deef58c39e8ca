-- seeded into ${flyway:table}'s database
INSERT INTO orgs (name) VALUES ('${org_prefix}Acme; Inc.'), ('O''Brien & Sons'), ($q$Dollar $$ quoted$q$);
