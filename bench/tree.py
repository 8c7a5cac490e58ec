"""The Merkle tree (issue 14): leaves/s building the stored tree of a 1,000,000-event log with
service/store/tree.build (baseline: a plain read of the same positions and hashes in the same
batches), and the p99 latency of an inclusion and a consistency proof at random leaves and sizes of
that tree (baseline: the p99 of reading one event by its position); and the ingest figure of
bench/ingest.py with the tree kept up to date by the running service, against the same service with
its tree writer held off (this benchmark holds TREE_LOCK, so no writer leads), runs interleaved."""

import asyncio
import random
import statistics
import time

import asyncpg

from bench import ingest
from bench.harness import Context, Figure, median_of, service
from events import merkle
from events.log import TREE_LOCK
from service.store import db, tree

BATCH = 50_000


async def fill(url: str, events: int) -> None:
    """The log's rows straight from SQL (not measured): the tree only reads positions and hashes."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               SELECT 'usage-key_bench', 'acct_bench', 'UsageRecorded', '{}', sha256(n::text::bytea)
               FROM generate_series(1, $1) AS n""",
            events,
        )
        await admin.execute("VACUUM ANALYZE events")
    finally:
        await admin.close()


async def reset(connection) -> None:
    await connection.execute("TRUNCATE merkle_subtrees, log_gaps")
    await connection.execute("UPDATE merkle_tree_state SET tree_size = 0, last_position = 0, frontier = '{}'")


async def build_rate(url: str, events: int) -> float:
    admin = await asyncpg.connect(url)
    await reset(admin)
    await admin.close()
    connection = await db.connect(url)
    try:
        started = time.monotonic()
        while True:
            async with connection.transaction():
                if await tree.build(connection, BATCH) < BATCH:
                    break
        return events / (time.monotonic() - started)
    finally:
        await connection.close()


async def read_rate(url: str, events: int) -> float:
    connection = await db.connect(url)
    try:
        started, last = time.monotonic(), 0
        while rows := await connection.fetch(
            "SELECT position, hash FROM events WHERE position > $1 ORDER BY position LIMIT $2", last, BATCH
        ):
            last = rows[-1][0]
        return events / (time.monotonic() - started)
    finally:
        await connection.close()


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000


async def latencies(url: str, events: int, samples: int) -> dict[str, float]:
    connection = await db.connect(url)
    rng = random.Random(14)
    timings: dict[str, list[float]] = {"inclusion": [], "consistency": [], "baseline": []}
    try:
        root = await tree.root(connection, events)
        for _ in range(samples):
            size = rng.randint(events // 2, events)
            index = rng.randrange(size)
            started = time.perf_counter()
            proof = await tree.inclusion(connection, index, size)
            timings["inclusion"].append(time.perf_counter() - started)
            first = rng.randint(1, size)
            started = time.perf_counter()
            hashes = await tree.consistency(connection, first, events)
            timings["consistency"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await connection.fetchval("SELECT hash FROM events WHERE position = $1", index + 1)
            timings["baseline"].append(time.perf_counter() - started)
            # Every sample is checked against roots computed apart from the timing: proofs of a
            # 1,000,000-event log that do not verify would make the figure meaningless.
            size_root, first_root = await tree.root(connection, size), await tree.root(connection, first)
            if not merkle.verify_inclusion(proof.leaf_hash, index, size, proof.hashes, size_root):
                raise RuntimeError(f"the inclusion proof of {index} in {size} does not verify")
            if not merkle.verify_consistency(first, events, hashes, first_root, root):
                raise RuntimeError(f"the consistency proof from {first} to {events} does not verify")
    finally:
        await connection.close()
    return {name: p99(values) for name, values in timings.items()}


WRITER = "keyledger tree writer"  # its application_name (service/http/app.py)


async def hold_off_the_writer(url: str) -> asyncpg.Connection:
    """A connection holding TREE_LOCK: the service's writer, its session ended, cannot lead again."""
    holder = await asyncpg.connect(url)
    taking = asyncio.ensure_future(holder.execute("SELECT pg_advisory_lock($1)", TREE_LOCK))
    await asyncio.sleep(0.1)  # queued before the writer's session ends, so it is granted first
    admin = await asyncpg.connect(url)
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        WRITER,
    )
    await admin.close()
    await taking
    return holder


async def tree_caught_up(connection: asyncpg.Connection) -> None:
    query = "SELECT (SELECT last_position FROM merkle_tree_state) >= (SELECT max(position) FROM events)"
    while not await connection.fetchval(query):  # noqa: ASYNC110 (a database state, no local event)
        await asyncio.sleep(0.05)


async def ingest_with_and_without(context: Context) -> Figure:
    count, batch_size = context.size(full=60_000, quick=2_000), ingest.BATCH_SIZES[-1]
    with_tree, without_tree = [], []
    async with context.database() as url, service(url) as port:
        keys = await ingest.create_keys(port)
        connection = await asyncpg.connect(url)
        try:
            for _ in range(context.repeats):
                await tree_caught_up(connection)
                batches = ingest.bodies(ingest.usage_events(keys, count), batch_size)
                with_tree.append(await ingest.ingest_rate(port, connection, batches, count))
                holder = await hold_off_the_writer(url)
                batches = ingest.bodies(ingest.usage_events(keys, count), batch_size)
                without_tree.append(await ingest.ingest_rate(port, connection, batches, count))
                behind = "SELECT (SELECT last_position FROM merkle_tree_state) < (SELECT max(position) FROM events)"
                if not await connection.fetchval(behind):
                    raise RuntimeError("the tree writer ran while held off: the baseline would not be one")
                await holder.close()  # the writer leads again within a second and catches up
        finally:
            await connection.close()
    rate, bare = statistics.median(with_tree), statistics.median(without_tree)
    return Figure("tree", f"usage events/s end to end with the tree kept, batches of {batch_size:,}", rate,
                  "events/s", "the same service with its tree writer held off", bare,
                  "≥ 0.9 x without the tree", rate >= 0.9 * bare, with_tree,
                  f"{count:,} events a run, as bench/ingest.py measures, runs interleaved")  # fmt: skip


async def run(context: Context) -> list[Figure]:
    events, samples = context.size(full=1_000_000, quick=5_000), context.size(full=2_000, quick=200)
    async with context.database() as url:
        await fill(url, events)
        rate, runs = await median_of(context.repeats, lambda: build_rate(url, events))
        read, _ = await median_of(context.repeats, lambda: read_rate(url, events))
        p99s = await latencies(url, events, samples)
    note = f"{events:,} events; {samples:,} proofs each at random leaves and sizes, in-process through service/store/tree.py, each verified"
    return [
        Figure("tree", f"leaves/s building the tree of {events:,} events", rate, "leaves/s",
               "plain read of the same positions and hashes, same batches", read, "≥ 300,000 leaves/s",
               rate >= 300_000, runs, note),
        Figure("tree", f"inclusion proof p99, store in process ({events:,} events)", p99s["inclusion"], "ms",
               "one event read by position, p99", p99s["baseline"], "≤ 5 ms", p99s["inclusion"] <= 5, note=note),
        Figure("tree", f"consistency proof p99, store in process ({events:,} events)", p99s["consistency"], "ms",
               "one event read by position, p99", p99s["baseline"], "≤ 5 ms", p99s["consistency"] <= 5, note=note),
        await ingest_with_and_without(context),
    ]  # fmt: skip
