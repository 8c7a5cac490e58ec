"""`keyledger serve --workers N`: one listening socket, N worker processes accepting from it.

The parent binds the port once and starts the workers; each is handed the socket and serves
`create_app(settings)` on it, and the kernel gives every new connection to one of them. One
inherited socket rather than SO_REUSEPORT, because with it:
- a port already in use fails once, in the parent, before any worker starts (SO_REUSEPORT lets a
  second keyledger, or any process of the same user, bind the same port and quietly take a share
  of the connections);
- connections waiting to be accepted survive a worker's death (each SO_REUSEPORT socket has its own
  queue, and the connections in it are reset with its process);
- it behaves the same on Linux and macOS (macOS's SO_REUSEPORT does not balance).
What it costs: the kernel does not balance a shared socket. The worker that wakes first accepts
everything pending (asyncio accepts in a loop), so long-lived connections can split unevenly: 100
wrk connections opened at once split between 44/56 and 30/70 in our runs. SO_REUSEPORT would hash
them evenly, onto a stuck worker too.

Workers are spawned (a fresh interpreter each, multiprocessing's "spawn"), not forked: they import
everything after the parent has set PROMETHEUS_MULTIPROC_DIR (prometheus_client reads it at import),
and inherit none of the parent's state (the embedded server's handles, locks held by other threads).
They get the parent's Settings, pickled through a pipe: the same service token and JWT secret, also
the random ones of development. The projector elects one leader per database by itself.

Policy when a worker exits without being asked: stop the others and exit with status 1. No restarts
here: a dead worker is a bug to see, not to hide, and the supervisor of the service (systemd's
Restart=, Kubernetes) restarts the whole of it from a clean state.
"""

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from aiohttp import web

from service.config import Settings
from service.http import serving
from service.http.app import create_app

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTDOWN_SECONDS = serving.DRAIN_SECONDS  # how long in-flight requests may take to finish
ORPHAN_CHECK_SECONDS = 1.0
log = logging.getLogger(__name__)


def serve(settings: Settings, count: int) -> int:
    """Serve with `count` worker processes until SIGTERM or SIGINT (0) or until a worker dies (1)."""
    spawning = multiprocessing.get_context("spawn")
    with _listen(settings.host, settings.port) as sock, _metrics_dir(), _StopSignals() as signals:
        ready, ready_writer = spawning.Pipe(duplex=False)  # each worker sends its pid once it serves
        workers = [
            spawning.Process(
                target=_work,
                args=(settings, sock, os.getpid(), ready_writer),
                name=f"worker-{n}",
                daemon=True,
            )
            for n in range(1, count + 1)
        ]
        for worker in workers:
            with _signals_blocked():  # in the child until it has its own handlers (the mask is inherited)
                worker.start()
        sock.close()  # the workers hold it: once they have all stopped, connecting fails at once
        ready_writer.close()
        log.info(
            "%d workers started (pids %s) on one listening socket",
            count,
            ", ".join(str(w.pid) for w in workers),
        )
        dead = _supervise(workers, signals, ready)
        if dead is None:
            log.info("%s: stopping the workers", signal.Signals(signals.received[0]).name)
            status = 0
        else:
            log.error("%s (pid %d) %s; stopping keyledger", dead.name, dead.pid, _ending(dead.exitcode))
            status = 1
        _stop(workers, signals)
        for worker in workers:
            if worker.exitcode != 0 and status == 0:
                log.error("%s (pid %d) %s while stopping", worker.name, worker.pid, _ending(worker.exitcode))
                status = 1
    return status


def _supervise(workers: list[BaseProcess], signals: "_StopSignals", ready: Connection) -> BaseProcess | None:
    """Wait for SIGTERM or SIGINT (None) or for a worker to end (that worker); say when all serve."""
    waiting_for: Connection | None = ready
    serving = 0
    while not signals.received:
        if dead := [worker for worker in workers if not worker.is_alive()]:
            return dead[0]
        readable = wait([*(worker.sentinel for worker in workers), signals.fd, *filter(None, [waiting_for])])
        signals.drain()
        if waiting_for in readable:
            try:
                waiting_for.recv()
                serving += 1
            except EOFError:  # every worker has sent or died: the death is seen above
                serving = len(workers) + 1
            if serving == len(workers):
                log.info("all %d workers are ready", serving)
            if serving >= len(workers):
                waiting_for = None
    return None


def _stop(workers: list[BaseProcess], signals: "_StopSignals") -> None:
    """SIGTERM to every worker and wait; SIGKILL after SHUTDOWN_SECONDS, or at once on a second signal."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    asked, killed = len(signals.received), False
    deadline = time.monotonic() + SHUTDOWN_SECONDS + 5
    while alive := [worker for worker in workers if worker.is_alive()]:
        if not killed and (len(signals.received) > asked or time.monotonic() > deadline):
            log.warning("killing %d workers that have not stopped", len(alive))
            for worker in alive:
                worker.kill()
            killed = True
        wait([*(worker.sentinel for worker in alive), signals.fd], timeout=1.0)
        signals.drain()
    for worker in workers:
        worker.join()


def _ending(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


def _work(settings: Settings, sock: socket.socket, parent: int, ready: Connection) -> None:
    """One worker: serve on the inherited socket until SIGTERM. SIGINT is ignored: Ctrl-C reaches the
    whole process group, and the parent decides (it sends SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    app = create_app(settings)
    app.cleanup_ctx.append(_stop_when_orphaned(parent))
    app.on_startup.append(functools.partial(_tell, ready))  # after the app's start-up (pool, key cache)
    serving.serve(app, sock=sock, signals=(signal.SIGTERM,))


async def _tell(ready: Connection, app: web.Application) -> None:
    ready.send(os.getpid())
    ready.close()


def _stop_when_orphaned(parent: int):
    """A worker whose parent is gone (killed with SIGKILL) stops instead of serving on forever."""

    async def watch(app: web.Application) -> AsyncIterator[None]:
        async def poll() -> None:
            while True:
                await asyncio.sleep(ORPHAN_CHECK_SECONDS)
                if os.getppid() != parent:
                    log.error("the keyledger parent process (pid %d) is gone; this worker stops", parent)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        task = asyncio.create_task(poll())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return watch


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)  # aiohttp's default
    except OSError as error:
        raise SystemExit(f"keyledger cannot listen on {host}:{port}: {error.strerror or error}") from None


@contextlib.contextmanager
def _metrics_dir() -> Iterator[None]:
    """A directory for prometheus_client's multiprocess mode, which needs PROMETHEUS_MULTIPROC_DIR set
    before the workers start (and emptied between runs); an operator's own setting wins."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="keyledger-metrics-") as path:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class _StopSignals:
    """SIGTERM and SIGINT recorded in `received` instead of acted on; `fd` turns readable on each."""

    def __enter__(self) -> "_StopSignals":
        self.received: list[int] = []
        self.fd, self._write = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)
        self._handlers = {number: signal.signal(number, self._record) for number in STOP_SIGNALS}
        self._wakeup = signal.set_wakeup_fd(self._write)
        return self

    def _record(self, number: int, frame) -> None:
        self.received.append(number)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 1024)

    def __exit__(self, *exc_info) -> None:
        signal.set_wakeup_fd(self._wakeup)
        for number, handler in self._handlers.items():
            signal.signal(number, handler)
        os.close(self.fd)
        os.close(self._write)
