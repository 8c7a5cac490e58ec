"""What every benchmark shares: figures, repeats, databases, a running service, wrk, the machine."""

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from service.http.auth import issue_token
from service.store import migrations
from service.store.db import with_database

JWT_SECRET = "bench-secret-" + "x" * 40
SERVICE_TOKEN = "bench-service-token"
SERVICE_PIDS: dict[
    int, int
] = {}  # port -> pid of each running service(), for benchmarks that watch the process


@dataclass
class Figure:
    """One measured figure, printed and stored with its same-run baseline and the ratio between them."""

    benchmark: str
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    goal: str = ""
    met: bool | None = None  # None: the figure has no goal to meet
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        return self.value / self.baseline_value

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Context:
    quick: bool
    server_url: str  # a PostgreSQL server; each benchmark makes its own databases on it
    repeats: int

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A fresh, migrated database, dropped afterwards."""
        name = f"keyledger_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(self.server_url)
        try:
            await admin.execute(f"CREATE DATABASE {name}")
            url = with_database(self.server_url, name)
            await migrations.migrate(url)
            yield url
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.close()


async def median_of(repeats: int, measure: Callable[[], Awaitable[float]]) -> tuple[float, list[float]]:
    """Run a measurement several times (the machines are shared and noisy); the median and all runs."""
    runs = [await measure() for _ in range(repeats)]
    return statistics.median(runs), runs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_for_port(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {within} s")


@contextlib.asynccontextmanager
async def baseline_server(module: str, *args: str) -> AsyncIterator[int]:
    """A baseline's own process (`python -m <module> <port> <args>`), listening on the port yielded."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", module, str(port), *args)
    try:
        await wait_for_port(port)
        yield port
    finally:
        process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def service(database_url: str, **env: str) -> AsyncIterator[int]:
    """`keyledger serve` in a process of its own, as in production; yields its port."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "serve",
        env={**os.environ, "KEYLEDGER_DATABASE_URL": database_url, "KEYLEDGER_PORT": str(port),
             "KEYLEDGER_JWT_SECRET": JWT_SECRET, "KEYLEDGER_SERVICE_TOKEN": SERVICE_TOKEN, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        SERVICE_PIDS[port] = process.pid
        await wait_for_port(port)
        yield port
    finally:
        SERVICE_PIDS.pop(port, None)
        process.terminate()
        await process.wait()


def user_token(account_id: str) -> str:
    return issue_token(JWT_SECRET, account_id)


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(
    url: str, *, seconds: int, connections: int, headers: dict[str, str], script: str | None = None
) -> WrkResult:
    """Run wrk (Debian's package; `make bench-deps`) and read its --latency report."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run `make bench-deps` (apt-get install wrk)")
    command = ["wrk", "--latency", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", script]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    errors += int(match.group(1)) if (match := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_milliseconds(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        p99_ms=_milliseconds(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
        errors=errors,
    )


def _milliseconds(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def machine() -> dict:
    return {"cores": os.cpu_count(), "python": sys.version.split()[0]}


async def verified_key(port: int, account: str, **fields) -> str:
    """A key created through the API (with these fields besides its name) whose account has an active
    subscription, once it verifies."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base) as session:
        headers = {"Authorization": f"Bearer {user_token(account)}"}
        async with session.post(
            "/api/v1/accounts/user/api-keys/create/", json={"name": "bench", **fields}, headers=headers
        ) as r:
            key = (await r.json())["key"]
        async with session.put(
            f"/api/v1/internal/accounts/{account}/subscription",
            json={"status": "active", "plan": "bench"},
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        ) as r:
            assert r.status == 200, await r.text()
        for _ in range(50):  # until the key cache has the subscription
            async with session.get("/api/v1/auth/verify", headers={"Authorization": f"Bearer {key}"}) as r:
                if r.status == 200:
                    return key
            await asyncio.sleep(0.05)
    raise RuntimeError("the benchmark key never verified")


ROOT = Path(__file__).resolve().parent.parent
