-- The hash chain (events/chain.py): each event's hash covers its content and the hash before it.
-- Appends draw their positions first (under APPEND_LOCK) so the hash can cover the position too.
ALTER TABLE events ADD COLUMN hash bytea;  -- NULL only for events recorded before this migration
GRANT USAGE ON SEQUENCE events_position_seq TO keyledger_app;
