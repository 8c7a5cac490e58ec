"""Usage events as typed rows of the log (migration 008): key_id, occurred_at, cost_chf, units,
endpoint and model in columns of their own, `data` and `stream_id` NULL. The readers of
service/store/eventstore.py rebuild the JSON the hash covers; here the hash is computed from the same
record, mostly before APPEND_LOCK is taken (events.chain.canonical_around_drawn).
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import msgspec

from events import chain
from events.log import APPEND_LOCK, USAGE_CHANNEL, usage_stream
from events.model import UsageRecorded

_ZERO = timedelta(0)
# Under APPEND_LOCK only appends draw positions, so a block of n is one nextval and one setval; the
# database clock and the head of the chain are read in the same statement (after the lock: its snapshot
# must include the append that held it before).
_DRAW = """
    SELECT setval('events_position_seq', nextval('events_position_seq') + $1 - 1) - $1 + 1 AS first,
           clock_timestamp() AS now,
           (SELECT hash FROM events ORDER BY position DESC LIMIT 1) AS head"""


async def draw(connection: asyncpg.Connection, count: int) -> tuple[int, datetime, bytes]:
    first, now, head = await connection.fetchrow(_DRAW, count)
    return first, now, head or chain.GENESIS


_TYPED_COLUMNS = (
    "position", "recorded_at", "occurred_at", "units", "account_id", "type", "key_id", "idempotency_key",
    "hash", "cost_chf", "endpoint", "model", "metadata",
)  # fmt: skip
_HASH = _TYPED_COLUMNS.index("hash")


def _typed_row(account_id: str, event: UsageRecorded, metadata: bytes | None) -> list:
    """A usage event's row of _TYPED_COLUMNS, position, recorded_at and hash still to draw."""
    return [
        None, None, event.occurred_at, event.units, account_id, "UsageRecorded", event.key_id,
        event.request_id, None, Decimal(event.cost_chf), event.endpoint, event.model, metadata,
    ]  # fmt: skip


def _hash_record(account_id: str, event: UsageRecorded, metadata: dict) -> dict:
    """What the hash covers, as an export line would show it (data as the event's JSON decodes)."""
    return {
        "stream_id": usage_stream(event.key_id),
        "version": None,
        "account_id": account_id,
        "type": "UsageRecorded",
        "data": msgspec.to_builtins(event),
        "metadata": metadata,
        "idempotency_key": event.request_id,
    }


def is_typed(event: UsageRecorded) -> bool:
    # A typed row rebuilds occurred_at in UTC (usage_time_text); another offset keeps its JSON.
    return event.occurred_at.utcoffset() == _ZERO


async def append(
    connection: asyncpg.Connection, usage: Sequence[tuple[str, UsageRecorded]], metadata: dict
) -> int:
    """eventstore.append_usage for a batch of typed events (is_typed); returns how many were new.

    The look-up of known request ids runs before APPEND_LOCK; under it the unique constraint on
    idempotency_key decides: should a concurrent append have stored one of them meanwhile, the insert
    is undone and made again, looking up under the lock this time (nobody can add one then).
    """
    unique: dict[str, tuple[str, UsageRecorded]] = {}
    for account_id, event in usage:  # the first of a request id twice in the batch counts
        unique.setdefault(event.request_id, (account_id, event))
    seen = await known(connection, list(unique))
    new = [pair for request_id, pair in unique.items() if request_id not in seen]
    if not new:
        return 0
    meta_json = msgspec.json.encode(metadata)
    stored_metadata = meta_json if metadata else None
    plain_metadata = msgspec.json.decode(meta_json)
    rows = [_typed_row(account_id, event, stored_metadata) for account_id, event in new]
    around = [chain.canonical_around_drawn(_hash_record(a, e, plain_metadata)) for a, e in new]
    await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    try:
        async with connection.transaction():
            await _copy(connection, rows, around)
    except asyncpg.UniqueViolationError:  # stored by a concurrent append after the look-up
        seen = await known(connection, [event.request_id for _, event in new])
        keep = [n for n, (_, event) in enumerate(new) if event.request_id not in seen]
        if not keep:
            return 0
        rows, around = [rows[n] for n in keep], [around[n] for n in keep]
        await _copy(connection, rows, around)
    await connection.execute("SELECT pg_notify($1, '')", USAGE_CHANNEL)
    return len(rows)


async def known(connection: asyncpg.Connection, request_ids: list[str]) -> set[str]:
    rows = await connection.fetch(
        "SELECT idempotency_key FROM events WHERE idempotency_key = ANY($1::text[])", request_ids
    )
    return {row[0] for row in rows}


async def _copy(connection: asyncpg.Connection, rows: list[list], around: list) -> None:
    """Positions, clock and hashes drawn, then one binary COPY; the caller holds APPEND_LOCK."""
    first, recorded_at, head = await draw(connection, len(rows))
    recorded_text = chain.timestamp_text(recorded_at).encode()
    for position, row, parts in zip(range(first, first + len(rows)), rows, around, strict=True):
        head = chain.link_drawn(head, parts, position, recorded_text)
        row[0], row[1], row[_HASH] = position, recorded_at, head
    await connection.copy_records_to_table("events", records=rows, columns=_TYPED_COLUMNS)
