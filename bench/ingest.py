"""Usage ingest end to end: HTTP POST batches → committed → counted in key_usage_totals, against a
raw `copy_records_to_table` of the same rows into an unindexed copy of `events`."""

import asyncio
import itertools
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
import asyncpg
import msgspec

from bench.harness import SERVICE_TOKEN, Context, Figure, median_of, service, user_token

SENDERS = 4
BATCH_SIZES = (100, 1_000, 10_000)
ACCOUNTS, KEYS_PER_ACCOUNT = 4, 5
EVENT = {"cost_chf": "0.000150", "units": 812, "endpoint": "/v1/chat/completions", "model": "bench-1"}


async def create_keys(port: int) -> list[tuple[str, str]]:
    """(key_id, account_id) of ACCOUNTS x KEYS_PER_ACCOUNT keys, created through the API."""
    keys = []
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        for account, _ in itertools.product(range(ACCOUNTS), range(KEYS_PER_ACCOUNT)):
            account_id = f"acct_ingest_{account}"
            async with session.post(
                "/api/v1/accounts/user/api-keys/create/",
                json={"name": "bench"},
                headers={"Authorization": f"Bearer {user_token(account_id)}"},
            ) as response:
                assert response.status == 201, await response.text()
                keys.append(((await response.json())["id"], account_id))
    return keys


def usage_events(keys: list[tuple[str, str]], count: int) -> list[dict]:
    """`count` usage reports with unique request ids, spread over the keys, occurred now."""
    now, run = datetime.now(UTC).isoformat(), secrets.token_hex(4)
    return [
        {"request_id": f"req_{run}_{n}", "key_id": keys[n % len(keys)][0], "occurred_at": now, **EVENT}
        for n in range(count)
    ]


def bodies(events: list[dict], batch_size: int) -> list[bytes]:
    return [
        msgspec.json.encode({"events": events[start : start + batch_size]})
        for start in range(0, len(events), batch_size)
    ]


async def post_all(session: aiohttp.ClientSession, port: int, batches: list[bytes]) -> list[float]:
    """POST every body with SENDERS concurrent senders; the monotonic time of each 202, in order."""
    pending, accepted = iter(enumerate(batches)), [0.0] * len(batches)
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"}

    async def sender() -> None:
        for index, body in pending:
            async with session.post(
                f"http://127.0.0.1:{port}/api/v1/usage/", data=body, headers=headers
            ) as r:
                if r.status != 202:
                    raise RuntimeError(f"usage POST answered {r.status}: {await r.text()}")
            accepted[index] = time.monotonic()

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return accepted


async def projected(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT coalesce(sum(requests), 0) FROM key_usage_totals")


async def ingest_rate(port: int, connection: asyncpg.Connection, batches: list[bytes], count: int) -> float:
    """Events/s from the first POST until key_usage_totals counts all `count` events."""
    target = await projected(connection) + count
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        await post_all(session, port, batches)
        while await projected(connection) < target:  # noqa: ASYNC110 (a database count, no local event)
            await asyncio.sleep(0.005)
        return count / (time.monotonic() - started)


async def copy_rate(connection: asyncpg.Connection, events: list[dict], keys: dict[str, str]) -> float:
    """Rows/s of one copy_records_to_table of the same rows, as the log stores them (typed usage columns,
    migration 008), into the unindexed table raw_events."""
    now = datetime.now(UTC)
    records = [
        (n, now, datetime.fromisoformat(e["occurred_at"]), e["units"], keys[e["key_id"]], "UsageRecorded",
         e["key_id"], e["request_id"], secrets.token_bytes(32), Decimal(e["cost_chf"]), e["endpoint"],
         e["model"], '{"actor": "gateway", "client": "127.0.0.1"}')
        for n, e in enumerate(events, start=1)
    ]  # fmt: skip
    await connection.execute("TRUNCATE raw_events")
    started = time.monotonic()
    await connection.copy_records_to_table("raw_events", records=records, columns=COPIED)
    return len(records) / (time.monotonic() - started)


COPIED = (
    "position", "recorded_at", "occurred_at", "units", "account_id", "type", "key_id", "idempotency_key",
    "hash", "cost_chf", "endpoint", "model", "metadata",
)  # fmt: skip


async def run(context: Context) -> list[Figure]:
    count = context.size(full=60_000, quick=2_000)
    figures = []
    async with context.database() as url, service(url) as port:
        keys = await create_keys(port)
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("CREATE TABLE raw_events (LIKE events)")  # columns only, no index
            copy, _ = await median_of(
                context.repeats, lambda: copy_rate(connection, usage_events(keys, count), dict(keys))
            )
            for batch_size in BATCH_SIZES:

                async def measure(batch_size: int = batch_size) -> float:
                    batches = bodies(usage_events(keys, count), batch_size)  # built before timing
                    return await ingest_rate(port, connection, batches, count)

                rate, runs = await median_of(context.repeats, measure)
                figures.append(
                    Figure("ingest", f"usage events/s end to end, batches of {batch_size:,}", rate, "events/s",
                           "copy_records_to_table, unindexed table", copy,
                           "≥ 100,000 events/s and ≥ 0.25 x raw COPY", rate >= 100_000 and rate >= 0.25 * copy,
                           runs, f"{count:,} events a run, {SENDERS} concurrent senders, HTTP POST to "
                           "202 to visible in key_usage_totals")
                )  # fmt: skip
        finally:
            await connection.close()
    return figures
