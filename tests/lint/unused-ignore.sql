-- squawk-ignore no-such-rule
SELECT 1;
