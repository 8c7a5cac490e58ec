"""Projection lag while ingesting at 80% of the maximum ingest rate: for each batch, the time from its 202
until the usage projector's checkpoint covers the batch's last event."""

import asyncio
import statistics
import time

import aiohttp
import asyncpg

from bench.harness import SERVICE_TOKEN, Context, Figure, service
from bench.ingest import bodies, create_keys, ingest_rate, usage_events

BATCH = 1_000
SHARE = 0.8  # of the maximum end-to-end ingest rate measured in the same run


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def lags(port: int, url: str, keys: list, rate: float, seconds: float) -> list[float]:
    """Send BATCH-event batches every BATCH / rate seconds for `seconds`; each batch's lag in ms."""
    count = max(2, int(rate * seconds / BATCH))
    events = usage_events(keys, count * BATCH)
    batches = bodies(events, BATCH)
    last_ids = [events[n * BATCH + BATCH - 1]["request_id"] for n in range(count)]
    reader, poller = await asyncpg.connect(url), await asyncpg.connect(url)
    checkpoint, moved = 0, asyncio.Condition()

    async def poll() -> None:
        nonlocal checkpoint
        while True:
            position = await poller.fetchval(
                "SELECT position FROM projector_checkpoints WHERE projector = 'usage'"
            )
            async with moved:
                checkpoint = position or 0
                moved.notify_all()
            await asyncio.sleep(0.005)

    async def one(session: aiohttp.ClientSession, body: bytes, last_id: str) -> float:
        headers = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"}
        async with session.post(f"http://127.0.0.1:{port}/api/v1/usage/", data=body, headers=headers) as r:
            assert r.status == 202, await r.text()
        accepted = time.monotonic()
        # Positions are drawn in batch order, so the batch's last report holds its highest position.
        position = await reader.fetchval("SELECT position FROM events WHERE idempotency_key = $1", last_id)
        async with moved:
            await moved.wait_for(lambda: checkpoint >= position)
        return 1000 * (time.monotonic() - accepted)

    polling = asyncio.create_task(poll())
    try:
        async with aiohttp.ClientSession() as session:
            started, tasks = time.monotonic(), []
            for n, (body, last_id) in enumerate(zip(batches, last_ids, strict=True)):
                await asyncio.sleep(max(0.0, started + n * BATCH / rate - time.monotonic()))
                tasks.append(asyncio.create_task(one(session, body, last_id)))
            return await asyncio.gather(*tasks)
    finally:
        polling.cancel()
        await reader.close()
        await poller.close()


async def run(context: Context) -> list[Figure]:
    seconds = context.size(full=5, quick=1)
    async with context.database() as url, service(url) as port:
        keys = await create_keys(port)
        connection = await asyncpg.connect(url)
        try:  # the maximum: the ingest benchmark's end-to-end rate with batches of BATCH
            probe = context.size(full=20_000, quick=2_000)
            maximum = await ingest_rate(port, connection, bodies(usage_events(keys, probe), BATCH), probe)
        finally:
            await connection.close()
        runs = [await lags(port, url, keys, maximum * SHARE, seconds) for _ in range(context.repeats)]
    p50s, p99s = [percentile(r, 0.50) for r in runs], [percentile(r, 0.99) for r in runs]
    p99 = statistics.median(p99s)
    note = (
        f"batches of {BATCH:,} sent at a fixed pace of {maximum * SHARE:,.0f} events/s ({SHARE:.0%} of the "
        f"end-to-end maximum of {maximum:,.0f} measured just before), {seconds} s a run; lag from the 202 until "
        "projector_checkpoints covers the batch's last event (polled every 5 ms)"
    )
    return [
        Figure("lag", f"projection lag p50 at {maximum * SHARE:,.0f} events/s", statistics.median(p50s), "ms",
               runs=p50s, note=note),
        Figure("lag", f"projection lag p99 at {maximum * SHARE:,.0f} events/s", p99, "ms",
               goal="≤ 100 ms at 80% of the maximum ingest rate", met=p99 <= 100, runs=p99s, note=note),
    ]  # fmt: skip
