-- The immutable event log: the only source of truth.
-- Appends take the advisory lock APPEND_LOCK (see service/eventstore.py) so that positions become
-- visible in commit order: a reader that has seen position p has seen every position below p.

CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id   text        NOT NULL,
    version     integer,                         -- NULL for events outside a versioned stream
    account_id  text        NOT NULL,            -- on every row, so the log can be distributed by account
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

CREATE INDEX events_account_position ON events (account_id, position);

CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- Triggers bind every role, the table owner included.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- The role the service runs as (it SETs ROLE to it on every connection): it may add to the log and
-- read it, nothing more there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keyledger_app') THEN
        CREATE ROLE keyledger_app NOLOGIN;
    END IF;
END
$$;
GRANT keyledger_app TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO keyledger_app;
REVOKE ALL ON events FROM keyledger_app;
GRANT SELECT, INSERT ON events TO keyledger_app;
GRANT SELECT ON schema_migrations TO keyledger_app;
