-- squawk's opt-in rule: off by default in both.
CREATE TABLE unqualified (id bigint PRIMARY KEY);
