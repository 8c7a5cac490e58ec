"""The key view with its 30-day usage, over a big stored log, against the same view on an empty store.

The log is filled in SQL as the database owner (the point is the size of the log and projections, not
how they got there): UsageRecorded rows over many keys and accounts and the last 35 days, with
idempotency keys but no hash (the chain is not what is measured), then projected as the projector does,
and checked: the usage projections the view reads must hold every one of those events.

Both stores live on the same server at the same time, each with its own `keyledger serve`, and their
runs alternate (empty, full, empty, full, …) so that the load of a shared machine falls on both alike.
"""

import asyncio
import os
import statistics
import time
from pathlib import Path

import asyncpg

from bench.harness import SERVICE_PIDS, Context, Figure, service, user_token, wrk
from bench.tree import tree_caught_up
from events import apikey
from events.account import CreateKey
from projections import usage
from service.app import commands
from service.store import db

ACCOUNT = "acct_view"
CONNECTIONS = 8
KEYS = 10_000  # usage is spread over this many keys, five per account; the viewed key is one of them
GOAL_MS, GOAL_RATIO = 3.0, 1.1  # issue 13: p99 at most 3 ms and at most 1.1 x the empty store

CHUNK = 500_000
_LOAD = """
    INSERT INTO events (position, stream_id, account_id, type, data, idempotency_key) OVERRIDING SYSTEM VALUE
    SELECT $6 + n, 'usage-' || key_id, account_id, 'UsageRecorded',
           jsonb_build_object('type', 'UsageRecorded', 'request_id', 'bench-' || n, 'key_id', key_id,
                              'occurred_at', now() - (n % 3024000) * interval '1 second',
                              'cost_chf', '0.000150000', 'units', 1, 'endpoint', '/v1/chat', 'model', 'm'),
           'bench-' || n
    FROM generate_series($1::bigint, $2::bigint) AS n,
         LATERAL (SELECT CASE WHEN n % $3 = 0 THEN $4 ELSE 'key_bench_' || n % $3 END AS key_id,
                         CASE WHEN n % $3 = 0 THEN $5 ELSE 'acct_bench_' || n % $3 / 5 END AS account_id) AS k
"""


async def create_key(url: str) -> str:
    pool = await db.create_pool(url, max_size=1)
    try:
        secret = apikey.generate()
        command = CreateKey(apikey.new_key_id(), "viewed", apikey.digest(secret), apikey.last4(secret))
        await commands.execute(pool, ACCOUNT, command, {"actor": "bench"})
    finally:
        await pool.close()
    return command.key_id


async def fill(url: str, events: int, key_id: str) -> None:
    """`events` UsageRecorded rows, projected into key_usage_totals/daily, then analysed.

    Two connections insert chunks at positions drawn here (so each chunk's range is known) while a third
    projects every contiguous committed range, as the projector would."""
    connections = [await asyncpg.connect(url) for _ in range(3)]
    try:
        base = await connections[0].fetchval("SELECT max(position) FROM events")
        chunks = iter(range(1, events + 1, CHUNK))
        committed: set[int] = set()

        async def insert(connection: asyncpg.Connection) -> None:
            for start in chunks:
                end = min(start + CHUNK - 1, events)
                await connection.execute(_LOAD, start, end, KEYS, key_id, ACCOUNT, base)
                committed.add(start)

        async def project(connection: asyncpg.Connection) -> None:
            projected = 0
            while projected < events:
                if projected + 1 not in committed:
                    await asyncio.sleep(0.05)
                    continue
                projected = min(projected + CHUNK, events)
                async with connection.transaction():
                    while await usage.project_batch(connection, limit=CHUNK, up_to=base + projected):
                        pass

        await asyncio.gather(insert(connections[0]), insert(connections[1]), project(connections[2]))
        await connections[0].execute("SELECT setval('events_position_seq', $1)", base + events)
        projected = await connections[0].fetchval(
            "SELECT (SELECT sum(requests) FROM key_usage_totals) + (SELECT sum(requests) FROM key_usage_daily)"
        )
        if projected != 2 * events:
            raise RuntimeError(f"the usage projections hold {projected / 2:,.0f} of {events:,} events")
        await connections[0].execute("VACUUM ANALYZE")
        # The load's dirty pages are written now, not by the checkpointer during the measurement.
        await connections[0].execute("CHECKPOINT")
    finally:
        for connection in connections:
            await connection.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def view_latency(port: int, key_id: str, seconds: int) -> tuple[float, float, float]:
    """p50 and p99 (ms) of the key view under wrk, and the service's CPU time per view (µs): latency
    on a shared machine says as much about the neighbours, CPU per view about the view."""
    target = f"http://127.0.0.1:{port}/api/v1/accounts/user/api-keys/{key_id}/"
    headers = {"Authorization": f"Bearer {user_token(ACCOUNT)}"}
    cpu_before = cpu_seconds(SERVICE_PIDS[port])
    result = await asyncio.to_thread(wrk, target, seconds=seconds, connections=CONNECTIONS, headers=headers)
    cpu = cpu_seconds(SERVICE_PIDS[port]) - cpu_before
    if result.errors:
        raise RuntimeError(f"{result.errors} errors while loading {target}")
    return result.p50_ms, result.p99_ms, cpu * 1e6 / (result.requests_per_second * seconds)


async def run(context: Context) -> list[Figure]:
    events = context.size(full=10_000_000, quick=10_000)
    seconds = context.size(full=10, quick=1)
    async with context.database() as empty_url, context.database() as full_url:
        empty_key, full_key = await create_key(empty_url), await create_key(full_url)
        started = time.monotonic()
        await fill(full_url, events, full_key)
        load_seconds = time.monotonic() - started
        async with service(empty_url) as empty_port, service(full_url) as full_port:
            # The service's tree writer first hashes the bulk-loaded log into its Merkle tree (about
            # 25 s of a core for 10,000,000 events); a log that grew as usage arrived has its tree kept
            # up already, so the views are measured once it has caught up.
            connection = await asyncpg.connect(full_url)
            try:
                await asyncio.wait_for(tree_caught_up(connection), 600)
            finally:
                await connection.close()
            for port, key_id in ((empty_port, empty_key), (full_port, full_key)):  # statements prepared
                await view_latency(port, key_id, 1)
            empty, full = [], []
            for _ in range(context.repeats):
                empty.append(await view_latency(empty_port, empty_key, seconds))
                full.append(await view_latency(full_port, full_key, seconds))
    p50, p99, cpu = (statistics.median(column) for column in zip(*full, strict=True))
    empty_p50, empty_p99, empty_cpu = (statistics.median(column) for column in zip(*empty, strict=True))
    note = (
        f"{events:,} UsageRecorded events over {KEYS:,} keys and 35 days, loaded and projected in "
        f"{load_seconds:.0f} s (bulk SQL as owner, hash column NULL); wrk, {CONNECTIONS} connections, "
        f"{seconds} s a run; empty-store runs (p99 ms) {[run[1] for run in empty]}"
    )
    met = p99 <= GOAL_MS and p99 <= GOAL_RATIO * empty_p99
    return [
        Figure("key_view", f"p50 of a key view, {events:,} usage events stored", p50, "ms",
               "same view, empty store", empty_p50, note=note),
        Figure("key_view", f"p99 of a key view, {events:,} usage events stored", p99, "ms",
               "same view, empty store", empty_p99, f"≤ {GOAL_MS:g} ms and ≤ {GOAL_RATIO:g} x empty", met,
               [run[1] for run in full], note),
        Figure("key_view", f"service CPU per key view, {events:,} usage events stored", cpu, "µs",
               "same view, empty store", empty_cpu, runs=[run[2] for run in full], note=note),
    ]  # fmt: skip
