"""Key verification through HTTP against a bare aiohttp handler, both loaded by wrk."""

import asyncio
import os
import statistics
from datetime import UTC, datetime, timedelta

from bench.harness import (
    ROOT,
    Context,
    Figure,
    baseline_server,
    service,
    verified_key,
    wrk,
)

CONNECTIONS = 32


async def run(context: Context) -> list[Figure]:
    seconds = context.size(full=10, quick=1)
    async with (
        context.database() as url,
        service(url) as port,
        baseline_server("bench.bare_app") as bare_port,
    ):
        key = await verified_key(port, "acct_bench")
        headers = {"Authorization": f"Bearer {key}"}
        # A key whose every check runs: an expiry to compare, a spend limit and this month's cost.
        far = (datetime.now(UTC) + timedelta(days=365)).isoformat()
        checked_key = await verified_key(port, "acct_bench", expires_at=far, monthly_spend_limit_chf="1000")
        checked_headers = {"Authorization": f"Bearer {checked_key}"}
        verify_url, bare_url = (
            f"http://127.0.0.1:{port}/api/v1/auth/verify",
            f"http://127.0.0.1:{bare_port}/api/v1/auth/verify",
        )

        async def throughput(target: str, headers: dict[str, str] = headers) -> float:
            result = await asyncio.to_thread(
                wrk, target, seconds=seconds, connections=CONNECTIONS, headers=headers
            )
            if result.errors:
                raise RuntimeError(f"{result.errors} errors while loading {target}")
            return result.requests_per_second

        # Round by round, each of the three loaded once: on a shared machine the load of the others
        # drifts over minutes, and a figure and its baseline should see the same drift.
        verify_runs, bare_runs, checked_runs = [], [], []
        for _ in range(context.repeats):
            verify_runs.append(await throughput(verify_url))
            bare_runs.append(await throughput(bare_url))
            checked_runs.append(await throughput(verify_url, checked_headers))
        verify_rps, bare_rps, checked_rps = map(statistics.median, (verify_runs, bare_runs, checked_runs))
        rate = verify_rps / 2
        os.environ["DELAY_MS"] = f"{1000 * CONNECTIONS / rate:.3f}"
        paced = await asyncio.to_thread(
            wrk,
            verify_url,
            seconds=seconds,
            connections=CONNECTIONS,
            headers=headers,
            script=str(ROOT / "bench" / "paced.lua"),
        )
    return [
        Figure("verify", "requests/s (valid key, warm cache)", verify_rps, "req/s", "bare aiohttp handler", bare_rps,
               "≥ 0.90 x bare", verify_rps >= 0.90 * bare_rps, verify_runs),
        Figure("verify", "requests/s, a key with an expiry and a spend limit", checked_rps, "req/s",
               "a key without either", verify_rps, "≥ 0.95 x without", checked_rps >= 0.95 * verify_rps,
               checked_runs),
        Figure("verify", f"p50 at {paced.requests_per_second:,.0f} req/s (half of max)", paced.p50_ms, "ms"),
        Figure("verify", f"p99 at {paced.requests_per_second:,.0f} req/s, {CONNECTIONS} connections", paced.p99_ms,
               "ms", goal="≤ 2 ms", met=paced.p99_ms <= 2),
    ]  # fmt: skip
