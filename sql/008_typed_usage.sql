-- Usage events as typed columns of the same log (issue 13): same positions, same hashes, same chain,
-- same append-only triggers. A UsageRecorded row holds key_id, occurred_at, cost_chf, units, endpoint
-- and model in columns of their own and NULL in `data` and `stream_id` (they are `usage_data(...)` and
-- 'usage-' || key_id); `metadata` is NULL where it is {}. Readers see every event as before: the read
-- functions of service/store/eventstore.py rebuild the JSON, byte for byte what was stored, so every
-- hash computed before this migration still verifies.
--
-- The table is rebuilt once (the triggers refuse UPDATE, and a rebuild leaves no dead rows and puts the
-- fixed-width columns first, where they need no alignment padding). A usage row whose JSON is not
-- exactly what its columns rebuild (an occurred_at with a UTC offset other than Z, say) keeps its JSON.

-- The exact text msgspec gives an aware datetime in UTC: seconds, microseconds only when not zero, Z.
CREATE FUNCTION usage_time_text(moment timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM moment)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(moment AT TIME ZONE 'UTC', '.US') END
        || 'Z'
$$;

-- A typed usage row's `data`, as UsageRecorded was stored as jsonb.
CREATE FUNCTION usage_data(request_id text, key_id text, occurred_at timestamptz, cost_chf numeric,
                           units bigint, endpoint text, model text) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('type', 'UsageRecorded', 'request_id', request_id, 'key_id', key_id,
                              'occurred_at', usage_time_text(occurred_at), 'cost_chf', cost_chf::text,
                              'units', units, 'endpoint', endpoint, 'model', model)
$$;

ALTER TABLE events RENAME TO events_before_008;
ALTER TABLE events_before_008 RENAME CONSTRAINT events_pkey TO events_before_008_pkey;
ALTER TABLE events_before_008 RENAME CONSTRAINT events_idempotency_key TO events_before_008_idempotency_key;
ALTER TABLE events_before_008 RENAME CONSTRAINT events_stream_version TO events_before_008_stream_version;
ALTER INDEX events_account_position RENAME TO events_before_008_account_position;
ALTER INDEX events_subscription_changes RENAME TO events_before_008_subscription_changes;
ALTER SEQUENCE events_position_seq RENAME TO events_before_008_position_seq;

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    occurred_at     timestamptz,     -- usage: the request's time
    units           bigint,          -- usage
    version         integer,         -- NULL for events outside a versioned stream
    account_id      text        NOT NULL,
    type            text        NOT NULL,
    key_id          text,            -- usage: set exactly on typed usage rows
    idempotency_key text,            -- usage: the gateway's request_id
    hash            bytea,           -- NULL only for events recorded before migration 004
    cost_chf        numeric(38, 9),  -- usage: exact, 9 places
    endpoint        text,            -- usage
    model           text,            -- usage
    stream_id       text,            -- NULL on typed usage rows: 'usage-' || key_id
    data            jsonb,           -- NULL on typed usage rows: usage_data(...)
    metadata        jsonb,           -- NULL for {}
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT events_typed_usage CHECK (CASE WHEN key_id IS NULL
        THEN data IS NOT NULL AND stream_id IS NOT NULL AND occurred_at IS NULL AND units IS NULL
             AND cost_chf IS NULL AND endpoint IS NULL AND model IS NULL
        ELSE data IS NULL AND stream_id IS NULL AND version IS NULL AND type = 'UsageRecorded'
             AND idempotency_key IS NOT NULL AND occurred_at IS NOT NULL AND units IS NOT NULL
             AND cost_chf IS NOT NULL AND endpoint IS NOT NULL AND model IS NOT NULL END)
);

INSERT INTO events (position, recorded_at, occurred_at, units, version, account_id, type, key_id,
                    idempotency_key, hash, cost_chf, endpoint, model, stream_id, data, metadata)
OVERRIDING SYSTEM VALUE
SELECT e.position, e.recorded_at, typed.occurred_at, typed.units, e.version, e.account_id, e.type,
       typed.key_id, e.idempotency_key, e.hash, typed.cost_chf, typed.endpoint, typed.model,
       CASE WHEN typed.key_id IS NULL THEN e.stream_id END,
       CASE WHEN typed.key_id IS NULL THEN e.data END,
       nullif(e.metadata, '{}')
FROM events_before_008 e
LEFT JOIN LATERAL (
    SELECT parsed.* FROM (
        SELECT e.data->>'key_id' AS key_id, (e.data->>'occurred_at')::timestamptz AS occurred_at,
               (e.data->>'cost_chf')::numeric(38, 9) AS cost_chf, (e.data->>'units')::bigint AS units,
               e.data->>'endpoint' AS endpoint, e.data->>'model' AS model
        -- Only what casts without error; the comparison below decides.
        WHERE e.type = 'UsageRecorded' AND e.version IS NULL AND jsonb_typeof(e.data) = 'object'
          AND e.stream_id = 'usage-' || (e.data->>'key_id') AND e.idempotency_key = e.data->>'request_id'
          AND e.data->>'occurred_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$'
          AND e.data->>'cost_chf' ~ '^(0|[1-9]\d{0,17})\.\d{9}$'
          AND jsonb_typeof(e.data->'units') = 'number' AND e.data->>'units' ~ '^\d{1,16}$'
    ) AS parsed
    WHERE usage_data(e.idempotency_key, parsed.key_id, parsed.occurred_at, parsed.cost_chf, parsed.units,
                     parsed.endpoint, parsed.model)::text = e.data::text
) AS typed ON true
ORDER BY e.position;

-- Positions go on from where the old sequence stood (not from max(position): drawn, rolled-back ones
-- stay unused).
SELECT setval(pg_get_serial_sequence('events', 'position'), last_value, is_called)
FROM events_before_008_position_seq;

-- Indexes: none of them holds a typed usage row except the primary key and the idempotency key.
-- A stream's events (lifecycle, and usage rows kept as JSON): `stream_id = $1` implies the predicate.
CREATE UNIQUE INDEX events_stream_version ON events (stream_id, version) WHERE stream_id IS NOT NULL;
CREATE INDEX events_account_position ON events (account_id, position) WHERE key_id IS NULL;
-- An account's typed usage (time travel): one entry per account and a posting list of row ids.
CREATE INDEX events_usage_account ON events (account_id) WHERE key_id IS NOT NULL;
CREATE INDEX events_subscription_changes ON events (account_id, position)
    WHERE type IN ('SubscriptionActivated', 'SubscriptionDeactivated');

-- The log as every reader knows it, one row per event as before this migration: a typed usage row
-- gets back its stream_id and the very JSON it was hashed with, NULL metadata is {}. The service reads
-- through it (service/store/eventstore.py); so may anyone who queries the log in SQL.
CREATE VIEW event_log AS
    SELECT position, coalesce(stream_id, 'usage-' || key_id) AS stream_id, version, account_id, type,
           coalesce(data, usage_data(idempotency_key, key_id, occurred_at, cost_chf, units, endpoint, model))
               AS data,
           coalesce(metadata, '{}') AS metadata, recorded_at, idempotency_key, hash
    FROM events;
-- Read-only as the log is (else it would be automatically updatable, for its owner).
CREATE TRIGGER event_log_read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

-- The analysts' view follows the renamed table; point it at the new one (same columns: its grants and
-- its read-only trigger stay).
CREATE OR REPLACE VIEW analytics.subscription_history WITH (security_barrier) AS
    SELECT position,
           account_id,
           CASE type WHEN 'SubscriptionActivated' THEN 'active' ELSE 'inactive' END AS status,
           data->>'plan' AS plan,
           coalesce(data->>'activated_at', data->>'deactivated_at')::timestamptz AS changed_at,
           recorded_at
    FROM events
    WHERE type IN ('SubscriptionActivated', 'SubscriptionDeactivated');

-- The old table goes (the triggers refuse TRUNCATE, not DROP), its triggers and sequence with it.
DROP TABLE events_before_008;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

REVOKE ALL ON events FROM keyledger_app, PUBLIC;
GRANT SELECT, INSERT ON events TO keyledger_app;
GRANT SELECT ON event_log TO keyledger_app;
-- UPDATE for setval: an append draws its block of positions in one step (it may insert any position
-- with OVERRIDING SYSTEM VALUE anyway).
GRANT USAGE, UPDATE ON SEQUENCE events_position_seq TO keyledger_app;
