"""Appending to and reading the event log.

Every append holds the transaction-scoped advisory lock APPEND_LOCK from before its rows get their
positions until it commits. Positions therefore become visible in the order they were handed out,
and a reader of `position > last_seen` can never skip an event that commits late.
"""

from collections.abc import Sequence

import asyncpg
import msgspec

from events.model import Event, UsageRecorded, event_encoder, event_type
from events.stored import StoredEvent

APPEND_LOCK = 0x6B65796C65646702
# NOTIFY is delivered on commit and lost while nobody listens: listeners treat it as a hint to catch
# up from their last position, never as the data itself.
LIFECYCLE_CHANNEL = "keyledger_lifecycle"
USAGE_CHANNEL = "keyledger_usage"


class WrongExpectedVersion(Exception):
    def __init__(self, stream_id: str, expected: int, actual: int | None):
        super().__init__(f"stream {stream_id}: expected version {expected}, found {actual}")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


_COLUMNS = "position, stream_id, version, account_id, type, data, metadata, recorded_at"


def _stored(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(*row)


async def append(
    connection: asyncpg.Connection,
    stream_id: str,
    account_id: str,
    expected_version: int,
    new_events: Sequence[Event],
    metadata: dict,
) -> list[StoredEvent]:
    """Append events at versions expected_version+1…; must run inside a transaction."""
    if not connection.is_in_transaction():
        raise RuntimeError("append must run inside a transaction")
    await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    actual = await connection.fetchval("SELECT max(version) FROM events WHERE stream_id = $1", stream_id)
    if (actual or 0) != expected_version:
        raise WrongExpectedVersion(stream_id, expected_version, actual)
    count = len(new_events)
    try:
        rows = await connection.fetch(
            f"""INSERT INTO events (stream_id, version, account_id, type, data, metadata)
                SELECT $1, $2 + n, $3, t.type, t.data, $6
                FROM unnest($4::text[], $5::jsonb[]) WITH ORDINALITY AS t(type, data, n)
                ORDER BY n
                RETURNING {_COLUMNS}""",
            stream_id,
            expected_version,
            account_id,
            [event_type(event) for event in new_events],
            [event_encoder.encode(event) for event in new_events],
            msgspec.json.encode(metadata),
        )
    except asyncpg.UniqueViolationError as error:  # a writer that bypassed the lock
        raise WrongExpectedVersion(stream_id, expected_version, None) from error
    if len(rows) != count:
        raise RuntimeError(f"appended {len(rows)} of {count} events")
    await connection.execute("SELECT pg_notify($1, $2)", LIFECYCLE_CHANNEL, str(rows[-1]["position"]))
    return sorted((_stored(row) for row in rows), key=lambda event: event.position)


async def append_usage(
    connection: asyncpg.Connection, usage: Sequence[tuple[str, UsageRecorded]], metadata: dict
) -> int:
    """Append (account_id, UsageRecorded) pairs in one statement; returns how many were new.

    A request_id already in the log (or twice in this batch) is skipped: that is the idempotency
    the gateway relies on, enforced by the unique constraint on idempotency_key.
    """
    if not connection.is_in_transaction():
        raise RuntimeError("append_usage must run inside a transaction")
    await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    accepted = await connection.fetchval(
        """WITH inserted AS (
               INSERT INTO events (stream_id, account_id, type, data, metadata, idempotency_key)
               SELECT 'usage-' || t.key_id, t.account_id, 'UsageRecorded', t.data, $5, t.request_id
               FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
                    WITH ORDINALITY AS t(account_id, key_id, request_id, data, n)
               ORDER BY t.n
               ON CONFLICT (idempotency_key) DO NOTHING
               RETURNING 1)
           SELECT count(*) FROM inserted""",
        [account_id for account_id, _ in usage],
        [event.key_id for _, event in usage],
        [event.request_id for _, event in usage],
        [event_encoder.encode(event) for _, event in usage],
        msgspec.json.encode(metadata),
    )
    if accepted:
        await connection.execute("SELECT pg_notify($1, '')", USAGE_CHANNEL)
    return accepted


async def read_stream(connection: asyncpg.Connection, stream_id: str) -> list[StoredEvent]:
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY version", stream_id
    )
    return [_stored(row) for row in rows]


async def read_all(
    connection: asyncpg.Connection, after: int = 0, limit: int = 1000, account_id: str | None = None
) -> list[StoredEvent]:
    """Events with position > after, in position order; gap-safe thanks to APPEND_LOCK."""
    rows = await connection.fetch(
        f"""SELECT {_COLUMNS} FROM events
            WHERE position > $1 AND ($3::text IS NULL OR account_id = $3)
            ORDER BY position LIMIT $2""",
        after,
        limit,
        account_id,
    )
    return [_stored(row) for row in rows]
