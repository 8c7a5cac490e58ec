"""Replay: events/s of `projections.replay.replay` rebuilding every projection from a mixed log, against
a plain ordered SELECT of the same rows' columns that the replay reads (usage as typed columns, migration
008; the JSON of the others)."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.harness import Context, Figure, median_of
from events import apikey
from events.account import CreateKey, RevokeKey, SetSubscription, UpdateKey
from events.model import UsageRecorded
from projections import usage
from projections.replay import replay
from service.app import commands
from service.store import db, eventstore

WRITERS, WRITE_BATCH, KEYS_PER_ACCOUNT = 4, 10_000, 5


async def lifecycle(pool: db.Pool, account_id: str) -> list[str]:
    """Five keys, two renamed, one revoked, a subscription: the account's active key ids."""
    metadata = {"actor": "bench"}
    keys = []
    for n in range(KEYS_PER_ACCOUNT):
        secret, key_id = apikey.generate(), apikey.new_key_id()
        command = CreateKey(key_id, f"key {n}", apikey.digest(secret), apikey.last4(secret))
        await commands.execute(pool, account_id, command, metadata)
        keys.append(key_id)
    for key_id in keys[:2]:
        await commands.execute(pool, account_id, UpdateKey(key_id, "renamed"), metadata)
    await commands.execute(pool, account_id, RevokeKey(keys[-1]), metadata)
    await commands.execute(pool, account_id, SetSubscription(active=True, plan="bench"), metadata)
    return keys[:-1]


async def write_log(url: str, accounts: int, usage_events: int) -> None:
    """Lifecycle through the commands, usage through append_usage on WRITERS connections; then the live
    projector's work (replay compares with the live tables at the live checkpoint)."""
    pool = await db.create_pool(url)
    try:
        key_lists = await asyncio.gather(*(lifecycle(pool, f"acct_replay_{n}") for n in range(accounts)))
    finally:
        await pool.close()
    keys = [(key_id, f"acct_replay_{n}") for n, ids in enumerate(key_lists) for key_id in ids]
    now, starts = datetime.now(UTC), iter(range(0, usage_events, WRITE_BATCH))

    async def writer() -> None:
        connection = await db.connect(url)
        for start in starts:
            batch = []
            for n in range(start, min(start + WRITE_BATCH, usage_events)):
                key_id, account_id = keys[n % len(keys)]
                batch.append((account_id, UsageRecorded(
                    request_id=f"req_{n}", key_id=key_id, occurred_at=now - timedelta(hours=n % 720),
                    cost_chf=f"0.{n % 1000:06d}000", units=n % 4000, endpoint="/v1/chat/completions",
                    model=("bench-small", "bench-large")[n % 2],
                )))  # fmt: skip
            async with connection.transaction():
                await eventstore.append_usage(connection, batch, {"actor": "bench"})
        await connection.close()

    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    connection = await db.connect(url)
    while True:
        async with connection.transaction():
            if not await usage.project_batch(connection):
                break
    await connection.close()


async def replay_rate(url: str, events: int) -> float:
    started = time.monotonic()
    outcome = await replay(url)
    elapsed = time.monotonic() - started
    if outcome.differences:
        raise RuntimeError(f"the replay differs from the live projections: {outcome.differences}")
    return events / elapsed


async def select_rate(url: str) -> float:
    """Rows/s of the plain SELECT in position order, streamed through a server-side cursor: every column
    the replay reads (the typed usage columns, the JSON of lifecycle events)."""
    connection = await asyncpg.connect(url)
    try:
        started, rows = time.monotonic(), 0
        async with connection.transaction():
            cursor = await connection.cursor(
                "SELECT position, account_id, type, key_id, occurred_at, cost_chf, data FROM events ORDER BY position"
            )
            while page := await cursor.fetch(50_000):
                rows += len(page)
        return rows / (time.monotonic() - started)
    finally:
        await connection.close()


async def run(context: Context) -> list[Figure]:
    usage_events, accounts = context.size(full=1_000_000, quick=5_000), context.size(full=100, quick=10)
    async with context.database() as url:
        started = time.monotonic()
        await write_log(url, accounts, usage_events)
        written = time.monotonic() - started
        connection = await asyncpg.connect(url)
        events = await connection.fetchval("SELECT count(*) FROM events")
        await connection.close()
        rate, runs = await median_of(context.repeats, lambda: replay_rate(url, events))
        select, _ = await median_of(context.repeats, lambda: select_rate(url))
        storage = await storage_per_event(url, events)
    note = (
        f"{events:,} events ({usage_events:,} UsageRecorded over 30 days, the rest lifecycle of {accounts} "
        f"accounts), written in {written:.0f} s (not measured); replay = rebuild in the shadow schema "
        "plus the row-by-row comparison with the live tables"
    )
    return [
        Figure("replay", f"events/s rebuilding all projections from {events:,} events", rate, "events/s",
               "plain ordered SELECT of the columns the replay reads", select,
               "≥ 0.75 x the plain SELECT and ≥ 500,000 events/s", rate >= 0.75 * select and rate >= 500_000,
               runs, note),
        *storage,
    ]  # fmt: skip


async def storage_per_event(url: str, events: int) -> list[Figure]:
    """Bytes on disk per event of this (usage-dominated) log, measured, not estimated."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE events")
        table, indexes, projections = await connection.fetchrow(
            """SELECT pg_table_size('events'), pg_indexes_size('events'),
                      pg_total_relation_size('key_usage_daily') + pg_total_relation_size('key_usage_totals')
                      + pg_total_relation_size('key_usage_monthly')"""
        )
    finally:
        await connection.close()
    total = (table + indexes) / events
    return [
        Figure("storage", "events table (heap + TOAST) per event", table / events, "B"),
        Figure("storage", "events indexes per event", indexes / events, "B"),
        Figure(
            "storage",
            "events table and indexes per event",
            total,
            "B",
            goal="≤ 250 B",
            met=total <= 250,
            note=f"{events:,} events, 1,000,000 of them UsageRecorded",
        ),
        Figure("storage", "usage projections per event (30 days, 100 accounts)", projections / events, "B"),
    ]
