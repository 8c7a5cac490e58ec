"""Key lifecycle commands (create, rename, revoke) per second from 32 concurrent clients over many
accounts, against the same clients appending through a bare handler (bench/bare_append.py)."""

import asyncio
import itertools
import statistics
import time

import aiohttp

from bench.harness import Context, Figure, baseline_server, service, user_token

CLIENTS = 32
ACCOUNTS_PER_CLIENT = 20  # each client rotates over its own accounts: at most one active key each
BASE = "/api/v1/accounts/user/api-keys"
GOAL_RATE, GOAL_P99_MS = 1500, 50


async def _timed(session: aiohttp.ClientSession, samples: list, method: str, path: str, **options) -> dict:
    started = time.perf_counter()
    async with session.request(method, path, **options) as response:
        body = await response.json()
        if response.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {response.status} {body}")
    samples.append(time.perf_counter() - started)
    return body


async def client(session: aiohttp.ClientSession, number: int, until: float, latencies: dict) -> None:
    headers = [
        {"Authorization": f"Bearer {user_token(f'acct_life_{number}_{a}')}"}
        for a in range(ACCOUNTS_PER_CLIENT)
    ]
    for auth in itertools.cycle(headers):
        if time.monotonic() >= until:
            return
        key = await _timed(
            session, latencies["create"], "POST", f"{BASE}/create/", json={"name": "bench"}, headers=auth
        )
        await _timed(
            session,
            latencies["rename"],
            "PATCH",
            f"{BASE}/{key['id']}/update/",
            json={"name": "renamed"},
            headers=auth,
        )
        await _timed(session, latencies["revoke"], "POST", f"{BASE}/{key['id']}/revoke/", headers=auth)  # fmt: skip


async def bare_client(session: aiohttp.ClientSession, until: float, samples: list) -> None:
    while time.monotonic() < until:
        await _timed(session, samples, "POST", "/append", json={"name": "bench"})


async def _rate(port: int, clients) -> float:
    """Commands per second of CLIENTS clients looping over one session until the time is up."""
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:
        started = time.monotonic()
        done = await clients(session, started)
        return done / (time.monotonic() - started)


def p99_ms(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000


async def run(context: Context) -> list[Figure]:
    seconds = context.size(full=15, quick=1) / context.repeats
    latencies = {"create": [], "rename": [], "revoke": []}
    bare_latencies: list[float] = []
    rates, bare_rates = [], []

    async def lifecycle(session, started) -> int:
        before = sum(len(samples) for samples in latencies.values())
        await asyncio.gather(*(client(session, n, started + seconds, latencies) for n in range(CLIENTS)))
        return sum(len(samples) for samples in latencies.values()) - before

    async def bare(session, started) -> int:
        before = len(bare_latencies)
        await asyncio.gather(
            *(bare_client(session, started + seconds, bare_latencies) for _ in range(CLIENTS))
        )
        return len(bare_latencies) - before

    async with (
        context.database() as url,
        service(url) as port,
        baseline_server("bench.bare_append", url) as bare_port,
    ):
        for _ in range(context.repeats):  # interleaved, so both see the same machine
            rates.append(await _rate(port, lifecycle))
            bare_rates.append(await _rate(bare_port, bare))
    rate, bare_rate = statistics.median(rates), statistics.median(bare_rates)
    note = (
        f"{CLIENTS} aiohttp clients in the bench process, each looping create, rename, revoke over its own "
        f"{ACCOUNTS_PER_CLIENT} accounts; latency at the client, all runs pooled. Baseline: the same clients "
        "POSTing to a bare aiohttp handler that appends one row per transaction under one advisory lock "
        f"(bench/bare_append.py), interleaved with the runs; its p99 {p99_ms(bare_latencies):.1f} ms"
    )
    figures = [
        Figure("lifecycle", f"commands/s (create + rename + revoke), {CLIENTS} clients", rate, "commands/s",
               baseline_name="bare one-row append over HTTP", baseline_value=bare_rate,
               goal=f"≥ {GOAL_RATE:,} commands/s", met=rate >= GOAL_RATE, runs=rates, note=note),
    ]  # fmt: skip
    for command, samples in latencies.items():
        p99 = p99_ms(samples)
        figures.append(
            Figure(
                "lifecycle",
                f"p99 of {command}, {CLIENTS} clients",
                p99,
                "ms",
                baseline_name="bare one-row append over HTTP, p99",
                baseline_value=p99_ms(bare_latencies),
                goal=f"≤ {GOAL_P99_MS} ms",
                met=p99 <= GOAL_P99_MS,
                note=note,
            )
        )
    return figures
