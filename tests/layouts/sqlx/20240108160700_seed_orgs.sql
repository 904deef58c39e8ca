INSERT INTO orgs (name) VALUES ('Acme; Inc.'), ('O''Brien & Sons'), ($q$Dollar $$ quoted$q$);
