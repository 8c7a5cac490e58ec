-- Projection: the current state of every key. Written in the same transaction as the lifecycle
-- events it reflects, so a user reads their own writes.

CREATE TABLE api_keys (
    key_id           text        PRIMARY KEY,
    account_id       text        NOT NULL,
    name             text        NOT NULL,
    key_digest       bytea       NOT NULL UNIQUE,  -- SHA-256 of the full key
    last4            text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at       timestamptz NOT NULL,
    revoked_at       timestamptz,
    created_position bigint      NOT NULL,
    updated_position bigint      NOT NULL
);

CREATE INDEX api_keys_account_newest ON api_keys (account_id, created_position DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO keyledger_app;
