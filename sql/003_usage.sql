-- Subscriptions, usage metering and the projector's checkpoints.

-- Usage events carry the gateway's request_id here; the unique constraint makes "the same request
-- reported twice counts once, forever" a fact of the database, not a lookup that could race.
ALTER TABLE events ADD COLUMN idempotency_key text;
ALTER TABLE events ADD CONSTRAINT events_idempotency_key UNIQUE (idempotency_key);

-- Projection: subscription state per account, written with the lifecycle events (like api_keys).
CREATE TABLE subscriptions (
    account_id       text        PRIMARY KEY,
    status           text        NOT NULL CHECK (status IN ('active', 'inactive')),
    plan             text,
    changed_at       timestamptz NOT NULL,
    updated_position bigint      NOT NULL
);

-- The key cache of every service process catches up on changes by position.
CREATE INDEX api_keys_updated_position ON api_keys (updated_position);
CREATE INDEX subscriptions_updated_position ON subscriptions (updated_position);

-- Projections of UsageRecorded, written by the projector with its checkpoint in one transaction.
CREATE TABLE key_usage_totals (
    key_id       text           PRIMARY KEY,
    account_id   text           NOT NULL,
    requests     bigint         NOT NULL,
    cost_chf     numeric(38, 9) NOT NULL,
    last_used_at timestamptz    NOT NULL
);

CREATE TABLE key_usage_daily (
    key_id     text           NOT NULL,
    day        date           NOT NULL,  -- UTC
    account_id text           NOT NULL,
    requests   bigint         NOT NULL,
    cost_chf   numeric(38, 9) NOT NULL,
    PRIMARY KEY (key_id, day)
);

CREATE TABLE projector_checkpoints (
    projector text   PRIMARY KEY,
    position  bigint NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE
    ON subscriptions, key_usage_totals, key_usage_daily, projector_checkpoints TO keyledger_app;
