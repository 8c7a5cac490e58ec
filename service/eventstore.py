"""Appending to and reading the event log.

Every append holds the transaction-scoped advisory lock APPEND_LOCK from before its rows get their
positions until it commits. Positions therefore become visible in the order they were handed out,
and a reader of `position > last_seen` can never skip an event that commits late.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import msgspec

from events import chain
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


@dataclass(frozen=True, slots=True)
class _NewEvent:
    stream_id: str
    version: int | None
    account_id: str
    type: str
    data: bytes
    idempotency_key: str | None = None


async def _insert(
    connection: asyncpg.Connection, new: Sequence[_NewEvent], metadata: dict
) -> list[StoredEvent]:
    """Insert with positions, times and chained hashes drawn here; the caller holds APPEND_LOCK."""
    head = (
        await connection.fetchval("SELECT hash FROM events ORDER BY position DESC LIMIT 1") or chain.GENESIS
    )
    # Under APPEND_LOCK both the positions and the database clock advance in log order.
    positions = await connection.fetch(
        "SELECT nextval('events_position_seq') AS position, clock_timestamp() AS now FROM generate_series(1, $1)",
        len(new),
    )
    recorded_at = positions[0]["now"]
    meta_json = msgspec.json.encode(metadata)
    meta = msgspec.json.decode(meta_json)
    hashes = []
    for row, event in zip(positions, new, strict=True):
        record = {
            "position": row["position"],
            "stream_id": event.stream_id,
            "version": event.version,
            "account_id": event.account_id,
            "type": event.type,
            "data": msgspec.json.decode(event.data),
            "metadata": meta,
            "recorded_at": chain.timestamp_text(recorded_at),
            "idempotency_key": event.idempotency_key,
        }
        head = chain.link(head, record)
        hashes.append(head)
    rows = await connection.fetch(
        f"""INSERT INTO events (position, stream_id, version, account_id, type, data, metadata,
                                recorded_at, idempotency_key, hash)
            OVERRIDING SYSTEM VALUE
            SELECT t.position, t.stream_id, t.version, t.account_id, t.type, t.data, $6, $7, t.key, t.hash
            FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $8::jsonb[],
                        $9::text[], $10::bytea[])
                 AS t(position, stream_id, version, account_id, type, data, key, hash)
            ORDER BY t.position
            RETURNING {_COLUMNS}""",
        [row["position"] for row in positions],
        [event.stream_id for event in new],
        [event.version for event in new],
        [event.account_id for event in new],
        [event.type for event in new],
        meta_json,
        recorded_at,
        [event.data for event in new],
        [event.idempotency_key for event in new],
        hashes,
    )
    return [_stored(row) for row in rows]


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
    new = [
        _NewEvent(stream_id, expected_version + n, account_id, event_type(event), event_encoder.encode(event))
        for n, event in enumerate(new_events, start=1)
    ]
    try:
        stored = await _insert(connection, new, metadata)
    except asyncpg.UniqueViolationError as error:  # a writer that bypassed the lock
        raise WrongExpectedVersion(stream_id, expected_version, None) from error
    await connection.execute("SELECT pg_notify($1, $2)", LIFECYCLE_CHANNEL, str(stored[-1].position))
    return stored


async def append_usage(
    connection: asyncpg.Connection, usage: Sequence[tuple[str, UsageRecorded]], metadata: dict
) -> int:
    """Append (account_id, UsageRecorded) pairs; returns how many were new.

    A request_id already in the log (or twice in this batch) is skipped: that is the idempotency the
    gateway relies on. Under APPEND_LOCK nobody else can add one between the look-up and the
    insert, and the unique constraint on idempotency_key still guards it.
    """
    if not connection.is_in_transaction():
        raise RuntimeError("append_usage must run inside a transaction")
    await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    known = {
        row["idempotency_key"]
        for row in await connection.fetch(
            "SELECT idempotency_key FROM events WHERE idempotency_key = ANY($1::text[])",
            [event.request_id for _, event in usage],
        )
    }
    new = []
    for account_id, event in usage:
        if event.request_id not in known:
            known.add(event.request_id)
            data = event_encoder.encode(event)
            new.append(
                _NewEvent(f"usage-{event.key_id}", None, account_id, "UsageRecorded", data, event.request_id)
            )
    if new:
        await _insert(connection, new, metadata)
        await connection.execute("SELECT pg_notify($1, '')", USAGE_CHANNEL)
    return len(new)


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
