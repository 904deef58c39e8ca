DROP INDEX orders_placed;
