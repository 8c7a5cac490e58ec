"""The gunicorn worker of `keyledger serve --workers N`: aiohttp's GunicornWebWorker, serving the app
on our DrainingRunner (service/http/serving.py) instead of a plain AppRunner.

aiohttp's worker drops what still arrives on a connection once it stops (aio-libs/aiohttp#2298), so
a request whose body was still arriving at SIGTERM would never be answered
(tests/system/test_workers.py shows it). The runner also brings our access log. Run it directly with
`gunicorn 'service.http.app:app_from_environment()' --worker-class service.http.worker.Worker`.
"""

import logging
import os

from aiohttp import web
from aiohttp.worker import GunicornWebWorker
from gunicorn.errors import AppImportError

from service.config import ConfigError
from service.http.serving import DrainingRunner

# Of gunicorn's graceful_timeout, after which the master kills a stopping worker: this share for the
# requests in flight, a tenth for aiohttp to cancel what is left, the rest for the app's cleanup.
DRAIN_SHARE = 0.8
log = logging.getLogger(__name__)


class Worker(GunicornWebWorker):
    def load_wsgi(self) -> None:
        try:
            super().load_wsgi()
        except ConfigError as error:  # gunicorn stops on this one instead of starting workers again
            raise AppImportError(str(error)) from None
        app: web.Application = self.wsgi
        app.on_startup.append(_ready)  # after the app's own start-up: pool, key cache, projector

        async def runner() -> web.AppRunner:  # aiohttp's worker serves the runner it is given
            return DrainingRunner(
                app,
                drain_seconds=self.cfg.graceful_timeout * DRAIN_SHARE,
                shutdown_timeout=self.cfg.graceful_timeout / 10,
                keepalive_timeout=self.cfg.keepalive,
            )

        self.wsgi = runner


async def _ready(app: web.Application) -> None:
    log.info("worker %d is ready", os.getpid())
