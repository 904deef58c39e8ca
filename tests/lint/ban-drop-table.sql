DROP TABLE audit_old;
