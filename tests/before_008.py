"""The log as keyledger wrote and exported it before migration 008 (commit e3329b4): every event's JSON
in `data`, `metadata` NOT NULL. A frozen copy of that code, for the migration test to write a log with
the old schema and to export it as the old code did."""

import asyncpg
import msgspec

from events import chain
from events.log import APPEND_LOCK, usage_stream
from events.model import Event, UsageRecorded, event_encoder, event_type

_INSERT = """
    INSERT INTO events (position, stream_id, version, account_id, type, data, metadata,
                        recorded_at, idempotency_key, hash)
    OVERRIDING SYSTEM VALUE
    SELECT t.position, t.stream_id, t.version, t.account_id, t.type, t.data, $6, $7, t.key, t.hash
    FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $8::jsonb[],
                $9::text[], $10::bytea[])
         AS t(position, stream_id, version, account_id, type, data, key, hash)
    ORDER BY t.position"""

_CHAINED = """
    SELECT e.position, e.stream_id, e.version, e.account_id, e.type, e.data::text AS data,
           e.metadata::text AS metadata, e.recorded_at, e.idempotency_key, e.hash, previous.hash AS prev_hash
    FROM events e
    LEFT JOIN LATERAL (
        SELECT p.hash FROM events p WHERE p.position < e.position ORDER BY p.position DESC LIMIT 1
    ) AS previous ON true
    ORDER BY e.position"""


async def append(
    connection: asyncpg.Connection,
    account_id: str,
    events: list[tuple[str, int | None, Event]],
    metadata: dict,
) -> None:
    """(stream_id, version, event) appended as the code before migration 008 did (request_id as the
    idempotency key of a usage event)."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
        drawn = await connection.fetch(
            """SELECT nextval('events_position_seq') AS position, clock_timestamp() AS now,
                      (SELECT hash FROM events ORDER BY position DESC LIMIT 1) AS head
               FROM generate_series(1, $1)""",
            len(events),
        )
        head, recorded_at = drawn[0]["head"] or chain.GENESIS, drawn[0]["now"]
        meta_json = msgspec.json.encode(metadata)
        shared = {
            "metadata": msgspec.json.decode(meta_json),
            "recorded_at": chain.timestamp_text(recorded_at),
        }
        hashes, datas, keys = [], [], []
        for row, (stream_id, version, event) in zip(drawn, events, strict=True):
            data = event_encoder.encode(event)
            key = event.request_id if isinstance(event, UsageRecorded) else None
            record = {
                **shared,
                "position": row["position"],
                "stream_id": stream_id,
                "version": version,
                "account_id": account_id,
                "type": event_type(event),
                "data": msgspec.json.decode(data),
                "idempotency_key": key,
            }
            head = chain.link(head, record)
            hashes.append(head)
            datas.append(data.decode())
            keys.append(key)
        await connection.execute(
            _INSERT,
            [row["position"] for row in drawn],
            [stream_id for stream_id, _, _ in events],
            [version for _, version, _ in events],
            [account_id] * len(events),
            [event_type(event) for _, _, event in events],
            meta_json.decode(),
            recorded_at,
            datas,
            keys,
            hashes,
        )


def usage(event: UsageRecorded) -> tuple[str, None, UsageRecorded]:
    return usage_stream(event.key_id), None, event


async def export_lines(connection: asyncpg.Connection) -> list[bytes]:
    """The whole log as `keyledger export` wrote it before migration 008, line by line."""
    lines = []
    for row in await connection.fetch(_CHAINED):
        record = {
            "position": row["position"],
            "stream_id": row["stream_id"],
            "version": row["version"],
            "account_id": row["account_id"],
            "type": row["type"],
            "data": msgspec.json.decode(row["data"]),
            "metadata": msgspec.json.decode(row["metadata"]),
            "recorded_at": chain.timestamp_text(row["recorded_at"]),
            "idempotency_key": row["idempotency_key"],
            "prev_hash": (row["prev_hash"] or chain.GENESIS).hex(),
            "hash": row["hash"].hex() if row["hash"] is not None else None,
        }
        lines.append(msgspec.json.encode(record))
    return lines
