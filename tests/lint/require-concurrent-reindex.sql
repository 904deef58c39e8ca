REINDEX INDEX orders_placed;
