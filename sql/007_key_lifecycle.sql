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
