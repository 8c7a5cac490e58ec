-- Analysts: the read-only role `keyledger_analytics` and the views it may read (docs/analytics.md).
-- The views run with their owner's rights, which is what lets the role read through them without any
-- privilege on the tables behind them; they show no key digest, and the role can write nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keyledger_analytics') THEN
        CREATE ROLE keyledger_analytics NOLOGIN;
    END IF;
END
$$;

-- Nothing in the public schema for analysts: no table (api_keys and events hold the digests), and no
-- new objects (PostgreSQL 13 and 14 let every role create tables there; 15+ already refuse it).
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM keyledger_analytics, PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA analytics;

CREATE VIEW analytics.keys AS
    SELECT key_id, account_id, name, 'sk-***...' || last4 AS masked_key, last4, status, created_at, revoked_at
    FROM api_keys;

CREATE VIEW analytics.key_usage_totals AS
    SELECT key_id, account_id, requests, cost_chf, last_used_at
    FROM key_usage_totals;

CREATE VIEW analytics.key_usage_daily AS
    SELECT key_id, account_id, day, requests, cost_chf
    FROM key_usage_daily;

CREATE VIEW analytics.account_usage_daily AS
    SELECT account_id, day, count(*) AS keys_used, sum(requests)::bigint AS requests,
           sum(cost_chf)::numeric(38, 9) AS cost_chf
    FROM key_usage_daily
    GROUP BY account_id, day;

-- This view filters the log, whose other rows hold key digests: security_barrier keeps an analyst's
-- own (possibly leaky) functions in a WHERE clause from seeing rows before the filter has run.
CREATE VIEW analytics.subscription_history WITH (security_barrier) AS
    SELECT position,
           account_id,
           CASE type WHEN 'SubscriptionActivated' THEN 'active' ELSE 'inactive' END AS status,
           data->>'plan' AS plan,
           coalesce(data->>'activated_at', data->>'deactivated_at')::timestamptz AS changed_at,
           recorded_at
    FROM events
    WHERE type IN ('SubscriptionActivated', 'SubscriptionDeactivated');

CREATE INDEX events_subscription_changes ON events (account_id, position)
    WHERE type IN ('SubscriptionActivated', 'SubscriptionDeactivated');
CREATE INDEX key_usage_daily_account_day ON key_usage_daily (account_id, day);

-- The views are read-only for every role, their owner included. Without this, analytics.keys would be
-- automatically updatable (a write to it changes api_keys), and the grouped views would answer a
-- write with "cannot insert into view" instead of a permission error.
CREATE FUNCTION analytics.refuse_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the analytics views are read-only: % on analytics.% is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON analytics.keys
    FOR EACH ROW EXECUTE FUNCTION analytics.refuse_write();
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON analytics.key_usage_totals
    FOR EACH ROW EXECUTE FUNCTION analytics.refuse_write();
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON analytics.key_usage_daily
    FOR EACH ROW EXECUTE FUNCTION analytics.refuse_write();
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON analytics.account_usage_daily
    FOR EACH ROW EXECUTE FUNCTION analytics.refuse_write();
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON analytics.subscription_history
    FOR EACH ROW EXECUTE FUNCTION analytics.refuse_write();

GRANT USAGE ON SCHEMA analytics TO keyledger_analytics;
GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO keyledger_analytics;
