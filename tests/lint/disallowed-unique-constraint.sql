ALTER TABLE users ADD CONSTRAINT users_email UNIQUE (email);
