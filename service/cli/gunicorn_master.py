"""`keyledger serve --workers N`: this process becomes gunicorn's master, with N aiohttp workers.

gunicorn binds the port once and forks the workers, which all accept from that one socket; it starts
a worker again when one dies, and on SIGTERM or SIGINT stops them within graceful_timeout (each lets
its requests in flight finish: service/http/worker.py). Each worker builds its app from the
environment (service.http.app.app_from_environment), so what this process generated or started (the
development JWT secret and service token, the embedded PostgreSQL) is put there before gunicorn
forks: every worker uses the same settings.

prometheus-client keeps the counters of every worker in PROMETHEUS_MULTIPROC_DIR, and chooses that
storage once, when it is imported, which this process has done already: `share_metrics` sets the
variable and starts the command again (same pid, os.execv), so that the workers, forked from it,
count in the shared directory. An operator's own directory wins, and is emptied of metric files when
the master starts.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess

from service.config import Settings
from service.http import serving, worker
from service.http.app import app_from_environment

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _own_metrics_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"keyledger-metrics-{os.getpid()}"


def share_metrics() -> None:
    """Make sure the workers will count in one directory (starting this command again if need be)."""
    if not os.environ.get(METRICS_DIR):
        os.environ[METRICS_DIR] = str(_own_metrics_dir())
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _empty_metrics_dir(arbiter) -> None:
    directory = Path(os.environ[METRICS_DIR])
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # prometheus-client's files, of an earlier run
        stale.unlink()


def _forget_worker(arbiter, dead_worker) -> None:
    """prometheus-client's clean-up after a worker: its counters stay summed, its live gauges go."""
    multiprocess.mark_process_dead(dead_worker.pid)


def _remove_own_metrics_dir(arbiter) -> None:
    if Path(os.environ[METRICS_DIR]) == _own_metrics_dir():
        shutil.rmtree(_own_metrics_dir(), ignore_errors=True)


class _Master(BaseApplication):
    def __init__(self, options: dict):
        self._options = options
        super().__init__(prog="keyledger serve")

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self):  # in each worker, after the fork
        return app_from_environment()


def run(settings: Settings, count: int) -> None:
    """Serve with `count` workers until SIGTERM or SIGINT; exits (SystemExit) with gunicorn's status."""
    os.environ.update(
        KEYLEDGER_DATABASE_URL=settings.database_url,
        KEYLEDGER_SERVICE_TOKEN=settings.service_token,
        KEYLEDGER_HOST=settings.host,
        KEYLEDGER_PORT=str(settings.port),
    )
    if settings.development:
        os.environ["KEYLEDGER_JWT_SECRET"] = settings.jwt_secret
    if settings.checkpoint_key:  # the one kept in the data folder: every worker signs with it
        os.environ["KEYLEDGER_CHECKPOINT_KEY"] = settings.checkpoint_key
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    _Master(
        {
            "bind": [f"{host}:{settings.port}"],
            "workers": count,
            "worker_class": "service.http.worker.Worker",
            "graceful_timeout": round(serving.DRAIN_SECONDS / worker.DRAIN_SHARE),
            "keepalive": 75,  # seconds, aiohttp's default, as `keyledger serve` without workers
            "proc_name": "keyledger",
            "control_socket_disable": True,  # gunicornc's socket: one path per user, not per service
            "on_starting": _empty_metrics_dir,
            "child_exit": _forget_worker,
            "on_exit": _remove_own_metrics_dir,
        }
    ).run()
