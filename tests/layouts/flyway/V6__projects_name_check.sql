ALTER TABLE projects ADD CONSTRAINT projects_name_len
    CHECK (char_length(name) < 200) NOT VALID;
