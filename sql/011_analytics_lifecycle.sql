-- The analysts' views of the key lifecycle of issue 12 (sql/007): analytics.keys gains its columns
-- at the end (CREATE OR REPLACE VIEW keeps the grants and the read-only trigger), and each key's
-- usage per UTC month, which spend limits are checked against, gets a view of its own.

CREATE OR REPLACE VIEW analytics.keys AS
    SELECT key_id, account_id, name, masked_key, last4, status, created_at, revoked_at,
           expires_at, monthly_spend_limit_chf, rotated_from, rotated_to, revoked_reason
    FROM api_keys;

CREATE VIEW analytics.key_usage_monthly AS
    SELECT key_id, account_id, month, requests, cost_chf
    FROM key_usage_monthly;

CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON analytics.key_usage_monthly
    FOR EACH ROW EXECUTE FUNCTION analytics.refuse_write();

GRANT SELECT ON analytics.key_usage_monthly TO keyledger_analytics;
