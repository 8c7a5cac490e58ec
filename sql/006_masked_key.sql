-- The masked key (`sk-***...` and the last 4 characters) has one home, events/apikey.py: the key
-- projection stores what `apikey.masked` gives, and analytics.keys reads that column instead of
-- building the mask again in SQL.

ALTER TABLE api_keys ADD COLUMN masked_key text;
-- Rows projected before this migration, masked as apikey.masked did when it was written; a replay
-- (`keyledger replay`) rebuilds the same values from the log.
UPDATE api_keys SET masked_key = 'sk-***...' || last4;
ALTER TABLE api_keys ALTER COLUMN masked_key SET NOT NULL;

-- Same columns, same order: the view's grants and its read-only trigger stay.
CREATE OR REPLACE VIEW analytics.keys AS
    SELECT key_id, account_id, name, masked_key, last4, status, created_at, revoked_at
    FROM api_keys;
