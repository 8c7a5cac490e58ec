"""The Merkle tree (issue 14): leaves/s building the stored tree of a 1,000,000-event log with
service/store/tree.build (baseline: a plain read of the same positions and hashes in the same
batches), and the p99 latency of an inclusion and a consistency proof at random leaves and sizes of
that tree (baseline: the p99 of reading one event by its position)."""

import random
import statistics
import time

import asyncpg

from bench.harness import Context, Figure, median_of
from events import merkle
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
            if size == events and not merkle.verify_inclusion(
                proof.leaf_hash, index, size, proof.hashes, root
            ):
                raise RuntimeError(f"the inclusion proof of {index} in {size} does not verify")
            if first < events and not hashes:
                raise RuntimeError("an empty consistency proof between two sizes")
    finally:
        await connection.close()
    return {name: p99(values) for name, values in timings.items()}


async def run(context: Context) -> list[Figure]:
    events, samples = context.size(full=1_000_000, quick=5_000), context.size(full=2_000, quick=200)
    async with context.database() as url:
        await fill(url, events)
        rate, runs = await median_of(context.repeats, lambda: build_rate(url, events))
        read, _ = await median_of(context.repeats, lambda: read_rate(url, events))
        p99s = await latencies(url, events, samples)
    note = f"{events:,} events; {samples:,} proofs each at random leaves and sizes, in-process through service/store/tree.py"
    return [
        Figure("tree", f"leaves/s building the tree of {events:,} events", rate, "leaves/s",
               "plain read of the same positions and hashes, same batches", read, "≥ 300,000 leaves/s",
               rate >= 300_000, runs, note),
        Figure("tree", f"inclusion proof p99 ({events:,} events)", p99s["inclusion"], "ms",
               "one event read by position, p99", p99s["baseline"], "≤ 5 ms", p99s["inclusion"] <= 5, note=note),
        Figure("tree", f"consistency proof p99 ({events:,} events)", p99s["consistency"], "ms",
               "one event read by position, p99", p99s["baseline"], "≤ 5 ms", p99s["consistency"] <= 5, note=note),
    ]  # fmt: skip
