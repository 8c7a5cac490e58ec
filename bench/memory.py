"""Peak RSS of one service process whose key cache holds a million keys, against the same with none."""

import asyncio
import time
from pathlib import Path

import aiohttp
import asyncpg

from bench.harness import SERVICE_PIDS, Context, Figure, service, verified_key
from events import apikey

ACCOUNT = "acct_memory"
# api_keys rows straight in SQL as owner (the key cache loads from api_keys; no events are written),
# with ids, accounts (five keys each) and digests as long as real ones, at positions below the known key.
_KEYS = """
    INSERT INTO api_keys (key_id, account_id, name, key_digest, last4, masked_key, status, created_at,
                          created_position, updated_position)
    SELECT 'key_' || left(md5(n::text), 22), 'acct_' || left(md5((n / 5)::text), 16), 'bench',
           sha256(int8send(n)), 'abcd', $2, 'active', now(), n, n
    FROM generate_series(1, $1::bigint) AS n
"""


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024  # kB


def gauge(metrics: str, name: str) -> float:
    [line] = [line for line in metrics.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def loaded_rss(url: str, key: str, keys: int) -> tuple[float, float]:
    """Start a service, wait until its key cache holds all `keys` and is fresh and it verifies the
    known key, and return its peak RSS (MB) and the seconds from start to loaded. A 200 alone does
    not show the load is over: while the cache loads, verification asks the database."""
    started = time.monotonic()
    async with service(url) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        for _ in range(2400):
            async with session.get("/metrics") as response:
                metrics = await response.text()
            if gauge(metrics, "keyledger_key_cache_keys") >= keys and gauge(
                metrics, "keyledger_key_cache_fresh"
            ):
                async with session.get(
                    "/api/v1/auth/verify", headers={"Authorization": f"Bearer {key}"}
                ) as r:
                    if r.status == 200:
                        break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the service never loaded its keys")
        seconds = time.monotonic() - started
        await asyncio.sleep(0.5)  # the cache's next catch-up, so the peak includes a steady second
        return peak_rss_mb(SERVICE_PIDS[port]), seconds


async def run(context: Context) -> list[Figure]:
    keys = context.size(full=1_000_000, quick=2_000)
    async with context.database() as empty_url, context.database() as url:
        async with service(empty_url) as port:
            empty_key = await verified_key(port, ACCOUNT)
        empty_mb, _ = await loaded_rss(empty_url, empty_key, 1)
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(_KEYS, keys, apikey.masked("abcd"))
            await connection.execute("SELECT setval('events_position_seq', $1)", keys)
            await connection.execute("VACUUM ANALYZE api_keys")
        finally:
            await connection.close()
        async with service(url) as port:
            key = await verified_key(port, ACCOUNT)
        full_mb, seconds = await loaded_rss(url, key, keys + 1)
    note = f"VmHWM of the service process once its key cache held every key ({seconds:.1f} s after start)"
    return [
        Figure("memory", f"peak RSS of one service process, {keys + 1:,} active keys", full_mb, "MB",
               "same process, 0 bulk keys (1 key)", empty_mb, "≤ 120 MB", full_mb <= 120, note=note),
    ]  # fmt: skip
