"""`keyledger serve --workers 2`: gunicorn's master and two workers serve one port; a worker that dies
is started again; SIGTERM and SIGINT stop everything cleanly.

The service runs as it does in production, a `keyledger serve` process of its own (tests/processes.py);
what each process does is read from /proc (which process holds which socket, whose child it is), so
the service exposes nothing new.
"""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from service.store.eventstore import APPEND_LOCK
from tests.helpers import (
    KEYS,
    USAGE,
    VERIFY,
    auth,
    bearer,
    expect,
    service_headers,
    subscription_path,
    usage_event,
    wait_until,
)
from tests.processes import Service, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")

LISTEN, ESTABLISHED = "0A", "01"  # socket states in /proc/net/tcp
READY_WITHIN = 60.0  # the embedded PostgreSQL's first start runs initdb


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, workers: int = 2, **env: str) -> AsyncIterator[Service]:
    """`keyledger serve --workers N` until every worker is ready; killed (SIGKILL, every process of it)
    if a test leaves it running."""
    logs = tmp_path / f"serve-{time.monotonic_ns()}"
    database_url = env.pop("KEYLEDGER_DATABASE_URL", "")
    environment = {"KEYLEDGER_DATA_DIR": str(tmp_path / "data"), **env}
    service = Service(database_url, free_port(), logs, "--workers", str(workers), **environment)
    try:
        await service.ready(within=READY_WITHIN)
        await wait_until(lambda: len(ready_workers(service)) == workers, within=READY_WITHIN)
        yield service
    finally:
        if service.process.poll() is None:
            for pid in processes(service):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        service.close()


def log(service: Service) -> str:
    return service.stdout + service.stderr


def workers(service: Service) -> list[int]:
    """gunicorn's workers: the children of the master that are forks of it (same command line)."""
    master = service.process.pid
    return [pid for pid in children(master) if cmdline(pid) == cmdline(master)]


def ready_workers(service: Service) -> list[int]:
    """The workers that said they serve (each does once its pool and key cache are up)."""
    said = {int(pid) for pid in re.findall(r"worker (\d+) is ready", service.stderr)}
    return [pid for pid in workers(service) if pid in said]


def processes(service: Service) -> list[int]:
    """Every process of the service: the master, its workers and any child of theirs."""
    found, queue = [], [service.process.pid]
    while queue:
        found.append(pid := queue.pop())
        queue += children(pid)
    return found


async def stop(service: Service, number: int = signal.SIGTERM, within: float = 30.0) -> int:
    """SIGTERM (or another signal) to the master; its exit status."""
    service.signal(number)
    return await service.exit_code(within)


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


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def postgres_processes() -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and "postgres" in cmdline(int(entry.name))
    ]


async def each_worker_answers(service: Service, method: str, path: str, **request) -> None:
    """Each worker alone, the others stopped (SIGSTOP), accepts a new connection and answers 200:
    which process accepted it is read from /proc while the connection is open."""
    serving_now = workers(service)
    for answering in serving_now:
        others = [pid for pid in serving_now if pid != answering]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            async with aiohttp.ClientSession(service.base_url, timeout=aiohttp.ClientTimeout(10)) as session:
                async with session.request(method, path, **request) as response:
                    await expect(response)
                    accepted = tcp_sockets(service.port, ESTABLISHED)
                    assert sockets_of(answering) & accepted, f"worker {answering} did not accept it"
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)


async def create_key(service: Service, account: str = "acct_workers") -> dict:
    async with aiohttp.ClientSession(service.base_url) as session:
        async with session.post(
            f"{KEYS}/create/", json={"name": "workers"}, headers=auth(account)
        ) as response:
            return await expect(response, 201)


def own_metrics_dir(service: Service) -> Path:
    """Where the master keeps the workers' metrics when the operator names no directory."""
    return Path(tempfile.gettempdir()) / f"keyledger-metrics-{service.process.pid}"


# The tests


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_two_workers_accept_from_one_listening_socket_and_a_signal_stops_all(
    tmp_path, database_url, stop_signal
):
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        serving_now = workers(service)
        assert len(serving_now) == 2
        [listening] = tcp_sockets(service.port, LISTEN)  # one socket, not one per worker
        # The master keeps it too: it hands it to the workers it starts again.
        assert all(listening in sockets_of(pid) for pid in [service.process.pid, *serving_now])
        assert own_metrics_dir(service).is_dir()

        await each_worker_answers(service, "GET", f"{KEYS}/", headers=auth("acct_workers"))
        everything = processes(service)
        assert await stop(service, stop_signal) == 0, log(service)
        await gone(everything)
        assert not own_metrics_dir(service).exists()


async def test_sigterm_lets_a_request_in_flight_finish_then_exits_0_with_no_process_left(
    tmp_path, database_url, admin
):
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        key = await create_key(service)
        everything = processes(service)
        waiting = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
        async with aiohttp.ClientSession(service.base_url) as session:
            async with admin.transaction():  # holds the append lock: the usage request waits for it
                await admin.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                events = {"events": [usage_event(key["id"], "req-in-flight")]}
                in_flight = asyncio.create_task(session.post(USAGE, json=events, headers=service_headers()))
                await wait_until(lambda: admin.fetchval(waiting), within=10)
                service.signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                assert service.process.poll() is None  # the master waits for the worker that answers
            async with await in_flight as response:
                assert (await expect(response, 202))["accepted"] == 1

        assert await service.exit_code(within=30) == 0, log(service)
        assert len(everything) == 3
        await gone(everything)
        assert await admin.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'") == 1
        with pytest.raises(OSError):  # nothing listens any more
            socket.create_connection(("127.0.0.1", service.port)).close()


async def test_sigterm_while_a_body_is_still_arriving_lets_it_finish(tmp_path, database_url, admin):
    """The worker has begun a request (it answered `100 Continue`, so its handler runs) when the
    master gets SIGTERM, and the body arrives after the port is closed: it must still be answered."""
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        key = await create_key(service)
        begun, stopping = asyncio.Event(), asyncio.Event()
        batch = json.dumps({"events": [usage_event(key["id"], "req-arriving")]}).encode()

        async def body():
            begun.set()  # with expect100, aiohttp sends the body once the worker said 100 Continue
            await stopping.wait()
            yield batch

        async with aiohttp.ClientSession(service.base_url, timeout=aiohttp.ClientTimeout(30)) as session:
            headers = {**service_headers(), "Content-Type": "application/json"}
            post = asyncio.create_task(session.post(USAGE, data=body(), headers=headers, expect100=True))
            await asyncio.wait_for(begun.wait(), 10)
            service.signal(signal.SIGTERM)
            await wait_until(lambda: not tcp_sockets(service.port, LISTEN), within=10)  # it is stopping
            stopping.set()
            async with await post as response:
                assert (await expect(response, 202))["accepted"] == 1

        assert await service.exit_code(within=30) == 0, log(service)
        assert await admin.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'") == 1


async def test_a_killed_worker_is_started_again_and_the_service_keeps_answering(tmp_path, database_url):
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        victim, survivor = workers(service)
        os.kill(victim, signal.SIGKILL)

        async with aiohttp.ClientSession(service.base_url, timeout=aiohttp.ClientTimeout(10)) as session:

            async def two_workers_again() -> bool:  # meanwhile, every request is answered
                headers = {**auth("acct_workers"), "Connection": "close"}
                async with session.get(f"{KEYS}/", headers=headers) as response:
                    await expect(response)
                return len(ready_workers(service)) == 2

            await wait_until(two_workers_again, within=30, interval=0.05)

        [replacement] = set(workers(service)) - {survivor}
        assert replacement != victim and not alive(victim)
        assert f"Worker (pid:{victim}) was sent SIGKILL" in service.stderr
        await each_worker_answers(service, "GET", f"{KEYS}/", headers=auth("acct_workers"))
        assert await stop(service) == 0, log(service)


async def test_workers_stop_when_the_master_is_killed(tmp_path, database_url):
    metrics = tmp_path / "metrics"  # a killed master cannot remove the directory it would make
    metrics.mkdir()
    env = {"KEYLEDGER_DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    async with serving(tmp_path, **env) as service:
        everything = processes(service)
        assert len(everything) == 3
        service.process.kill()
        service.process.wait()
        await gone(everything, within=10)  # each worker sees within a second that its parent changed


async def test_the_workers_log_as_ours_do_and_answer_unparsable_requests_with_the_envelope(
    tmp_path, database_url
):
    """Under gunicorn too: no access log line per successful verification, credentials in a URL
    redacted, and a request aiohttp's parser refuses answered with the JSON error envelope."""
    async with serving(tmp_path, KEYLEDGER_DATABASE_URL=database_url) as service:
        key = await create_key(service)
        async with aiohttp.ClientSession(service.base_url) as session:
            subscription = {"status": "active", "plan": "pro"}
            async with session.put(
                subscription_path("acct_workers"), json=subscription, headers=service_headers()
            ) as response:
                await expect(response)
            async with session.get(VERIFY, headers=bearer(key["key"])) as response:
                await expect(response)
            async with session.get(
                f"{KEYS}/?token=a-token-in-the-url", headers=auth("acct_workers")
            ) as response:
                assert response.status == 400  # answered, and logged with the value redacted

        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n")
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
        writer.close()
        assert head.split()[1] == b"431" and b"application/json" in head, head
        assert set(json.loads(body)["error"]) == {"message", "type"}

        await wait_until(lambda: "token=redacted" in service.stderr, within=5)
        assert "a-token-in-the-url" not in service.stderr
        assert not re.search(rf'"GET {VERIFY} HTTP/1.1" 200', service.stderr)
        assert f"PUT {subscription_path('acct_workers')}" in service.stderr  # other requests are logged
        assert await stop(service) == 0, log(service)


async def test_embedded_default_workers_share_the_development_secrets_and_stop_postgres(tmp_path):
    env = {"KEYLEDGER_JWT_SECRET": "", "KEYLEDGER_SERVICE_TOKEN": "", "KEYLEDGER_DATABASE_URL": ""}
    async with serving(tmp_path, **env) as service:
        banner = service.stdout
        [token] = re.findall(r"export TOKEN=(\S+)", banner)
        service_token = re.search(r"Service token.*:\n\s+(\S+)", banner).group(1)
        postgres = [pid for pid in postgres_processes() if str(tmp_path) in cmdline(pid)]
        assert postgres, "the embedded PostgreSQL is not running"

        # Both workers accept the master's random JWT secret and service token.
        await each_worker_answers(service, "GET", f"{KEYS}/", headers=bearer(token))
        subscription = {"status": "active", "plan": "demo"}
        await each_worker_answers(
            service, "PUT", subscription_path("acct_demo"), json=subscription, headers=bearer(service_token)
        )

        everything = processes(service)
        assert await stop(service) == 0, log(service)
        await gone(everything + postgres)


def test_gunicorn_run_directly_refuses_settings_each_worker_would_make_up():
    """`gunicorn 'service.http.app:app_from_environment()'` without a JWT key or service token: each
    worker would generate its own, so the workers refuse to start and gunicorn stops, saying why."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KEYLEDGER_JWT", "KEYLEDGER_SERVICE_TOKEN"))
    }
    # One worker: when two fail at once, gunicorn's stop raises its HaltServer again (exit 1).
    command = [
        sys.executable, "-m", "gunicorn", "service.http.app:app_from_environment()", "--bind", f"127.0.0.1:{free_port()}",
        "--worker-class", "service.http.worker.Worker", "--no-control-socket",
    ]  # fmt: skip
    ran = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 4, ran.stderr  # gunicorn's "App failed to load"
    assert "set KEYLEDGER_DATABASE_URL, KEYLEDGER_SERVICE_TOKEN and KEYLEDGER_JWT_SECRET" in ran.stderr
