/* The first migration: types and tables.
   /* A nested comment; with a semicolon; */
   still a comment; */
CREATE TYPE mood AS ENUM ('sad', 'ok');

CREATE TABLE person (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "full;name" text NOT NULL DEFAULT 'it''s; nobody', -- a comment; here
    greeting text DEFAULT E'hello;\n\'world\'',
    current_mood mood DEFAULT 'ok'
);
COMMENT ON TABLE person IS 'people; and their moods';
