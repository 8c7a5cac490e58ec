"""`keyledger serve --workers 2`: two processes serve one port, and the parent stops cleanly.

The service runs as it does in production, a `keyledger serve` process of its own; what each worker
does is read from /proc (which process holds which socket), so the service exposes nothing new.
"""

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from service.store.eventstore import APPEND_LOCK
from tests.helpers import (
    JWT_SECRET,
    KEYS,
    SERVICE_TOKEN,
    USAGE,
    auth,
    bearer,
    expect,
    service_headers,
    subscription_path,
    usage_event,
    wait_until,
)

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")

ROOT = Path(__file__).resolve().parents[2]
LISTEN, ESTABLISHED = "0A", "01"  # socket states in /proc/net/tcp


@dataclass
class Service:
    process: asyncio.subprocess.Process
    port: int
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.output.read_text()

    def workers(self) -> list[int]:
        """The pids the parent logged; [] until it has (and with one worker: no worker processes)."""
        started = re.search(r"\d+ workers started \(pids ([\d, ]+)\)", self.log())
        return [int(pid) for pid in started.group(1).split(", ")] if started else []

    def processes(self) -> list[int]:
        """Every process of the service: the parent, its children (workers, multiprocessing's
        resource tracker) and theirs (the embedded PostgreSQL)."""
        found, queue = [], [self.process.pid]
        while queue:
            found.append(pid := queue.pop())
            queue += children(pid)
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, workers: int = 2, **env: str) -> AsyncIterator[Service]:
    """`keyledger serve --workers N` until it answers /healthz; stopped (SIGKILL) if a test leaves it."""
    port, output = free_port(), tmp_path / f"serve-{time.monotonic_ns()}.log"
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "serve", "--workers", str(workers), "--port", str(port),
            cwd=ROOT, stdout=sink, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "KEYLEDGER_JWT_SECRET": JWT_SECRET, "KEYLEDGER_SERVICE_TOKEN": SERVICE_TOKEN,
                 "KEYLEDGER_DATA_DIR": str(tmp_path / "data"), **env},
        )  # fmt: skip
    service = Service(process, port, output)
    try:
        await _wait_until_ready(service, workers)
        yield service
    finally:
        if process.returncode is None:
            for pid in service.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await process.wait()


async def _wait_until_ready(service: Service, workers: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert service.process.returncode is None, service.log()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{service.url}/healthz") as response:
                    if response.status == 200 and (workers == 1 or "workers are ready" in service.log()):
                        return
            await asyncio.sleep(0.05)
    raise AssertionError(f"keyledger did not answer within {within} s:\n{service.log()}")


async def stop(service: Service, within: float = 30.0) -> int:
    """SIGTERM to the parent; its exit status."""
    service.process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(service.process.wait(), within)


# What /proc says


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # the fields after the command name (in parentheses): state, then the parent's pid
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def gone(pids: list[int], within: float = 3.0) -> None:
    """Wait for these processes to end (multiprocessing's resource tracker ends just after its parent)."""
    await wait_until(lambda: not any(alive(pid) for pid in pids), within=within, interval=0.05)


def tcp_sockets(port: int, state: str) -> set[str]:
    """Inodes of the sockets whose local port is `port`, in that state."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    return inodes


def sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (match := re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))) is not None:
                inodes.add(match.group(1))
    return inodes


async def each_worker_answers(service: Service, method: str, path: str, **request) -> None:
    """Each worker alone, the others stopped (SIGSTOP), accepts a new connection and answers 200:
    which process accepted it is read from /proc while the connection is open."""
    workers = service.workers()
    for answering in workers:
        others = [pid for pid in workers if pid != answering]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            async with aiohttp.ClientSession(service.url, timeout=aiohttp.ClientTimeout(10)) as session:
                async with session.request(method, path, **request) as response:
                    await expect(response)
                    accepted = tcp_sockets(service.port, ESTABLISHED)
                    assert sockets_of(answering) & accepted, f"worker {answering} did not accept it"
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)


# The tests


async def test_two_workers_accept_from_one_listening_socket(tmp_path, database_url):
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        workers = service.workers()
        assert len(workers) == 2
        [listening] = tcp_sockets(service.port, LISTEN)  # one socket, not one per worker
        assert all(listening in sockets_of(pid) for pid in workers)
        assert listening not in sockets_of(service.process.pid)  # the parent handed it over

        await each_worker_answers(service, "GET", f"{KEYS}/", headers=auth("acct_workers"))
        assert await stop(service) == 0


async def test_sigterm_lets_a_request_in_flight_finish_then_exits_0_with_no_process_left(
    tmp_path, database_url, admin
):
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        async with aiohttp.ClientSession(service.url) as session:
            async with session.post(
                f"{KEYS}/create/", json={"name": "in flight"}, headers=auth("acct_workers")
            ) as response:
                key = await expect(response, 201)
        processes = service.processes()
        waiting = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
        async with aiohttp.ClientSession(service.url) as session:
            async with admin.transaction():  # holds the append lock: the usage request waits for it
                await admin.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                events = {"events": [usage_event(key["id"], "req-in-flight")]}
                in_flight = asyncio.create_task(session.post(USAGE, json=events, headers=service_headers()))
                await wait_until(lambda: admin.fetchval(waiting), within=10)
                service.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                assert service.process.returncode is None  # the parent waits for the worker that answers
            async with await in_flight as response:
                assert (await expect(response, 202))["accepted"] == 1

        assert await asyncio.wait_for(service.process.wait(), 30) == 0, service.log()
        assert len(processes) >= 3
        await gone(processes)
        assert await admin.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'") == 1
        with pytest.raises(OSError):  # nothing listens any more
            socket.create_connection(("127.0.0.1", service.port)).close()


async def test_a_worker_that_dies_stops_the_service_with_status_1(tmp_path, database_url):
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        victim, _ = service.workers()
        processes = service.processes()
        os.kill(victim, signal.SIGKILL)
        assert await asyncio.wait_for(service.process.wait(), 30) == 1
        await gone(processes)
        assert re.search(
            rf"worker-\d \(pid {victim}\) was killed by SIGKILL; stopping keyledger", service.log()
        )


async def test_workers_stop_when_the_parent_is_killed(tmp_path, database_url):
    metrics = tmp_path / "metrics"  # a killed parent cannot remove the directory it would make
    metrics.mkdir()
    env = {"KEYLEDGER_DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    async with serving(tmp_path, **env) as service:
        processes = service.processes()
        assert len(processes) >= 3
        service.process.kill()
        await service.process.wait()
        await gone(processes, within=10)  # each worker notices within a second


async def test_embedded_default_workers_share_the_development_secrets_and_stop_postgres(tmp_path):
    env = {"KEYLEDGER_JWT_SECRET": "", "KEYLEDGER_SERVICE_TOKEN": "", "KEYLEDGER_DATABASE_URL": ""}
    async with serving(tmp_path, **env) as service:
        banner = service.log()
        [token] = re.findall(r"export TOKEN=(\S+)", banner)
        service_token = re.search(r"Service token.*:\n\s+(\S+)", banner).group(1)
        postgres = [pid for pid in postgres_processes() if str(tmp_path) in cmdline(pid)]
        assert postgres, "the embedded PostgreSQL is not running"

        # Both workers accept the parent's random JWT secret and service token.
        await each_worker_answers(service, "GET", f"{KEYS}/", headers=bearer(token))
        subscription = {"status": "active", "plan": "demo"}
        await each_worker_answers(
            service, "PUT", subscription_path("acct_demo"), json=subscription, headers=bearer(service_token)
        )

        processes = service.processes()
        assert await stop(service) == 0, service.log()
        await gone(processes + postgres)


def postgres_processes() -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and "postgres" in cmdline(int(entry.name))
    ]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
