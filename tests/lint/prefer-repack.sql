-- squawk checks it from PostgreSQL 19 on (REPACK): miglock lints for 15.
CLUSTER orders USING orders_pkey;
