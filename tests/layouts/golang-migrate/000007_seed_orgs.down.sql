DELETE FROM orgs WHERE name IN ('Acme; Inc.', 'O''Brien & Sons', $q$Dollar $$ quoted$q$);
