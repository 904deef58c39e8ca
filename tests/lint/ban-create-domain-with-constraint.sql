CREATE DOMAIN positive_amount AS numeric CHECK (VALUE > 0);
