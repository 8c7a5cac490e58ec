"""Key lifecycle commands (create, rename, revoke) per second from 32 concurrent clients over many accounts."""

import asyncio
import itertools
import statistics
import time

import aiohttp

from bench.harness import Context, Figure, median_of, service, user_token

CLIENTS = 32
ACCOUNTS_PER_CLIENT = 20  # each client rotates over its own accounts: at most one active key each
BASE = "/api/v1/accounts/user/api-keys"


async def client(session: aiohttp.ClientSession, number: int, until: float, latencies: dict) -> None:
    headers = [
        {"Authorization": f"Bearer {user_token(f'acct_life_{number}_{a}')}"}
        for a in range(ACCOUNTS_PER_CLIENT)
    ]

    async def timed(command: str, method: str, path: str, **options) -> dict:
        started = time.perf_counter()
        async with session.request(method, path, **options) as response:
            body = await response.json()
            if response.status not in (200, 201):
                raise RuntimeError(f"{command}: {response.status} {body}")
        latencies[command].append(time.perf_counter() - started)
        return body

    for auth in itertools.cycle(headers):
        if time.monotonic() >= until:
            return
        key = await timed("create", "POST", f"{BASE}/create/", json={"name": "bench"}, headers=auth)
        await timed("rename", "PATCH", f"{BASE}/{key['id']}/update/", json={"name": "renamed"}, headers=auth)
        await timed("revoke", "POST", f"{BASE}/{key['id']}/revoke/", headers=auth)


def p99_ms(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000


async def run(context: Context) -> list[Figure]:
    seconds = context.size(full=15, quick=1) / context.repeats
    latencies = {"create": [], "rename": [], "revoke": []}
    async with context.database() as url, service(url) as port:
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:

            async def commands_per_second() -> float:
                before = sum(len(samples) for samples in latencies.values())
                started = time.monotonic()
                until = started + seconds
                await asyncio.gather(*(client(session, n, until, latencies) for n in range(CLIENTS)))
                done = sum(len(samples) for samples in latencies.values()) - before
                return done / (time.monotonic() - started)

            rate, runs = await median_of(context.repeats, commands_per_second)
    note = (
        f"{CLIENTS} aiohttp clients in the bench process, each looping create, rename, revoke over its own "
        f"{ACCOUNTS_PER_CLIENT} accounts; latency at the client, all runs pooled"
    )
    figures = [
        Figure("lifecycle", f"commands/s (create + rename + revoke), {CLIENTS} clients", rate, "commands/s",
               goal="≥ 1,000 commands/s", met=rate >= 1000, runs=runs, note=note),
    ]  # fmt: skip
    for command, samples in latencies.items():
        p99 = p99_ms(samples)
        figures.append(
            Figure(
                "lifecycle",
                f"p99 of {command}, {CLIENTS} clients",
                p99,
                "ms",
                goal="≤ 20 ms",
                met=p99 <= 20,
                note=note,
            )
        )
    return figures
