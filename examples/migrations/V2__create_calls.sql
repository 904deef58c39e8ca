CREATE TABLE calls (
    id         bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id),
    started_at timestamptz NOT NULL,
    seconds    integer NOT NULL CHECK (seconds >= 0)
);
