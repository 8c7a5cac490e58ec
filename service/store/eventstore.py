"""Appending to and reading the event log.

Every append holds the transaction-scoped advisory lock APPEND_LOCK from before its rows get their
positions until it commits. Positions therefore become visible in the order they were handed out,
and a reader of `position > last_seen` can never skip an event that commits late.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from events import chain
from events.log import APPEND_LOCK, LIFECYCLE_CHANNEL, USAGE_CHANNEL, StoredEvent, usage_stream
from events.model import Event, UsageRecorded, event_encoder, event_type
from service.store import usage_rows


class WrongExpectedVersion(Exception):
    def __init__(self, stream_id: str, expected: int, actual: int | None):
        super().__init__(f"stream {stream_id}: expected version {expected}, found {actual}")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


# Read through the view event_log (migration 008): typed usage rows come back as the JSON they were
# hashed with.
_COLUMNS = "position, stream_id, version, account_id, type, data, metadata, recorded_at"


# Lifecycle rows are stored as they read, but for metadata {} (NULL).
_RETURNED = _COLUMNS.replace("metadata", "coalesce(metadata, '{}')")


def _stored(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(*row)


@dataclass(frozen=True, slots=True)
class _NewEvent:
    stream_id: str
    version: int | None
    account_id: str
    type: str
    data: bytes
    fields: dict  # data decoded, for the hash: made before APPEND_LOCK is taken
    idempotency_key: str | None = None


def _new_event(stream_id, version, account_id, event: Event, idempotency_key=None) -> _NewEvent:
    data = event_encoder.encode(event)
    return _NewEvent(
        stream_id, version, account_id, event_type(event), data, msgspec.json.decode(data), idempotency_key
    )


_INSERT = """
    INSERT INTO events (position, stream_id, version, account_id, type, data, metadata,
                        recorded_at, idempotency_key, hash)
    OVERRIDING SYSTEM VALUE
    SELECT t.position, t.stream_id, t.version, t.account_id, t.type, t.data, nullif($6::jsonb, '{}'), $7,
           t.key, t.hash
    FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $8::jsonb[],
                $9::text[], $10::bytea[])
         AS t(position, stream_id, version, account_id, type, data, key, hash)
    ORDER BY t.position"""


async def _insert(
    connection: asyncpg.Connection, new: Sequence[_NewEvent], metadata: dict, returning: bool
) -> list[StoredEvent]:
    """Insert with positions, times and chained hashes drawn here; the caller holds APPEND_LOCK, so
    everything here is serial: keep it short."""
    # Under APPEND_LOCK both the positions and the database clock advance in log order.
    first, recorded_at, head = await usage_rows.draw(connection, len(new))
    positions = list(range(first, first + len(new)))
    meta_json = msgspec.json.encode(metadata)
    shared = {"metadata": msgspec.json.decode(meta_json), "recorded_at": chain.timestamp_text(recorded_at)}
    hashes = []
    for position, event in zip(positions, new, strict=True):
        record = {
            **shared,
            "position": position,
            "stream_id": event.stream_id,
            "version": event.version,
            "account_id": event.account_id,
            "type": event.type,
            "data": event.fields,
            "idempotency_key": event.idempotency_key,
        }
        head = chain.link(head, record)
        hashes.append(head)
    arguments = (
        positions,
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
    if not returning:
        await connection.execute(_INSERT, *arguments)
        return []
    return [_stored(row) for row in await connection.fetch(f"{_INSERT} RETURNING {_RETURNED}", *arguments)]


# One round trip: APPEND_LOCK; the stream's version, read by the statement's snapshot, taken before the
# lock is granted (see append); the notification, which goes out on commit only.
_LOCK_FOR_STREAM = """
    SELECT pg_advisory_xact_lock($1), pg_notify($3, ''),
           (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $2) AS version"""


async def append(
    connection: asyncpg.Connection,
    stream_id: str,
    account_id: str,
    expected_version: int,
    new_events: Sequence[Event],
    metadata: dict,
) -> list[StoredEvent]:
    """Append events at versions expected_version+1…; must run inside a transaction.

    The version is compared as it stood just before APPEND_LOCK was granted. That is enough: a writer
    that appended to the stream since then wrote version expected_version+1 too, so the insert breaks
    the (stream_id, version) constraint, which refuses it as a wrong version as well.
    """
    if not connection.is_in_transaction():
        raise RuntimeError("append must run inside a transaction")
    new = [
        _new_event(stream_id, expected_version + n, account_id, event)
        for n, event in enumerate(new_events, start=1)
    ]  # encoded before the lock: everything under it is serial
    _, _, actual = await connection.fetchrow(_LOCK_FOR_STREAM, APPEND_LOCK, stream_id, LIFECYCLE_CHANNEL)
    if actual != expected_version:
        raise WrongExpectedVersion(stream_id, expected_version, actual)
    try:
        return await _insert(connection, new, metadata, returning=True)
    except asyncpg.UniqueViolationError as error:
        raise WrongExpectedVersion(stream_id, expected_version, None) from error


async def append_usage(
    connection: asyncpg.Connection, usage: Sequence[tuple[str, UsageRecorded]], metadata: dict
) -> int:
    """Append (account_id, UsageRecorded) pairs; returns how many were new.

    A request_id already in the log (or twice in this batch) is skipped: that is the idempotency the
    gateway relies on. The look-up runs before APPEND_LOCK; under it the unique constraint on
    idempotency_key decides: should a concurrent append have stored one of them meanwhile, the insert
    is undone and made again, looking up under the lock this time (nobody can add one then).
    """
    if not connection.is_in_transaction():
        raise RuntimeError("append_usage must run inside a transaction")
    if all(usage_rows.is_typed(event) for _, event in usage):
        return await usage_rows.append(connection, usage, metadata)
    return await _append_usage_as_json(connection, usage, metadata)


async def _append_usage_as_json(
    connection: asyncpg.Connection, usage: Sequence[tuple[str, UsageRecorded]], metadata: dict
) -> int:
    """A batch with an occurred_at in another offset than UTC: stored as JSON, as before migration 008."""
    candidates = [
        _new_event(usage_stream(event.key_id), None, account_id, event, event.request_id)
        for account_id, event in usage
    ]  # encoded before the lock: everything under it is serial
    await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    known = await usage_rows.known(connection, [candidate.idempotency_key for candidate in candidates])
    new = []
    for candidate in candidates:
        if candidate.idempotency_key not in known:
            known.add(candidate.idempotency_key)
            new.append(candidate)
    if new:
        await _insert(connection, new, metadata, returning=False)
        await connection.execute("SELECT pg_notify($1, '')", USAGE_CHANNEL)
    return len(new)


async def read_stream(
    connection: asyncpg.Connection, stream_id: str, recorded_up_to: datetime | None = None
) -> list[StoredEvent]:
    """A stream's events in version order; with `recorded_up_to`, those recorded by then only."""
    rows = await connection.fetch(
        # events.stream_id is indexed; event_log's (NULL on typed usage rows: usage streams are
        # unversioned, read by position) is not.
        f"""SELECT {_COLUMNS} FROM event_log WHERE position IN (
                SELECT position FROM events
                WHERE stream_id = $1 AND ($2::timestamptz IS NULL OR recorded_at <= $2))
            ORDER BY version""",
        stream_id,
        recorded_up_to,
    )
    return [_stored(row) for row in rows]


async def read_all(
    connection: asyncpg.Connection, after: int = 0, limit: int = 1000, account_id: str | None = None
) -> list[StoredEvent]:
    """Events with position > after, in position order; gap-safe thanks to APPEND_LOCK."""
    rows = await connection.fetch(
        f"""SELECT {_COLUMNS} FROM event_log
            WHERE position > $1 AND ($3::text IS NULL OR account_id = $3)
            ORDER BY position LIMIT $2""",
        after,
        limit,
        account_id,
    )
    return [_stored(row) for row in rows]


_CHAINED = """
    SELECT e.position, e.stream_id, e.version, e.account_id, e.type, e.data, e.metadata,
           e.recorded_at, e.idempotency_key, e.hash, previous.hash AS prev_hash
    FROM event_log e
    LEFT JOIN LATERAL (
        SELECT p.hash FROM events p WHERE p.position < e.position ORDER BY p.position DESC LIMIT 1
    ) AS previous ON true
    WHERE e.position > $1
      AND ($2::text IS NULL OR e.account_id = $2)
      AND ($3::timestamptz IS NULL OR e.recorded_at >= $3)
    ORDER BY e.position
    LIMIT $4"""


async def read_chained(
    connection: asyncpg.Connection,
    after: int,
    limit: int,
    account_id: str | None = None,
    since: datetime | None = None,
) -> list[asyncpg.Record]:
    """Rows after a position in log order, each with every stored column, its hash and the hash of the
    event before it in the whole log (what an auditor needs to check the chain of a filtered export)."""
    return await connection.fetch(_CHAINED, after, account_id, since, limit)


async def head(connection: asyncpg.Connection) -> asyncpg.Record | None:
    """The position and hash of the last event, or None for an empty log."""
    return await connection.fetchrow("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")


async def settled_clock(connection: asyncpg.Connection) -> datetime:
    """The database clock, read once every append that read an earlier clock has committed.

    An append holds APPEND_LOCK from before it reads the clock for `recorded_at` until it commits, so
    after waiting for that lock (shared, released at once) everything recorded up to the time read
    here is visible to the reads that follow."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock_shared($1)", APPEND_LOCK)
        return await connection.fetchval("SELECT clock_timestamp()")
