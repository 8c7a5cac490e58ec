-- Expiry, rotation, spend limits and the reason of a revocation (issue 12): the key object's new
-- fields, projected from ApiKeyCreated, ApiKeyExpirySet, ApiKeySpendLimitSet, ApiKeyRotated and
-- ApiKeyRevoked. `status` stays what events decide (active, revoked): whether a key has expired
-- depends on the clock, so readers compare expires_at with it.

ALTER TABLE api_keys
    ADD COLUMN expires_at              timestamptz,
    ADD COLUMN monthly_spend_limit_chf numeric(38, 9),
    ADD COLUMN rotated_from            text,
    ADD COLUMN rotated_to              text,
    ADD COLUMN revoked_reason          text CHECK (revoked_reason IN ('user', 'rotated', 'leaked'));

-- Keys revoked before this migration were revoked through the revoke endpoint, as a replay of their
-- ApiKeyRevoked events (reason "user" by default) gives too.
UPDATE api_keys SET revoked_reason = 'user' WHERE status = 'revoked';

-- Each key's usage per UTC calendar month, which spend limits are checked against. last_position is
-- the position of the newest usage event counted in the row: it does not depend on how the projector
-- batched the log (a replay gives the same rows), and it only grows, so the key caches follow it.
CREATE TABLE key_usage_monthly (
    key_id        text           NOT NULL,
    month         date           NOT NULL,  -- its first day, UTC
    account_id    text           NOT NULL,
    requests      bigint         NOT NULL,
    cost_chf      numeric(38, 9) NOT NULL,
    last_position bigint         NOT NULL,
    PRIMARY KEY (key_id, month)
);
CREATE INDEX key_usage_monthly_last_position ON key_usage_monthly (last_position);

GRANT SELECT, INSERT, UPDATE, DELETE ON key_usage_monthly TO keyledger_app;
