UPDATE orders SET total = 1, total = 2;
