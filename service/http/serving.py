"""Serving an app until SIGTERM or SIGINT, letting the requests in flight finish first.

aiohttp's run_app and its gunicorn worker start their shutdown at the signal, and from then on drop
what arrives on a connection (aio-libs/aiohttp#2298): a request whose body was still arriving would
never complete. So DrainingRunner's cleanup goes: stop listening, let every request in flight finish
(their connections are still read, their answers close them: the app's InFlight, which its one
middleware keeps, service/http/middleware.py), and only then run aiohttp's cleanup
and the app's (key cache, projector, pool). `serve` runs it in this process; service/http/worker.py
in each gunicorn worker.
"""

import asyncio
import contextlib
import signal

from aiohttp import web

from service.http.access_log import AccessLog
from service.http.appkeys import IN_FLIGHT

DRAIN_SECONDS = 60.0  # the longest a request in flight may take once stopping


def serve(app: web.Application, *, host: str, port: int) -> None:
    """Serve on host:port until SIGTERM or SIGINT."""
    asyncio.run(_serve(app, host, port))


class DrainingRunner(web.AppRunner):
    """aiohttp's AppRunner with our access log, whose cleanup lets the requests in flight finish
    first (for at most `drain_seconds`)."""

    def __init__(self, app: web.Application, *, drain_seconds: float = DRAIN_SECONDS, **kwargs):
        super().__init__(app, access_log_class=AccessLog, **kwargs)
        self._drain_seconds = drain_seconds
        self._in_flight = app[IN_FLIGHT]

    async def cleanup(self) -> None:
        for site in self.sites:
            await site.stop()  # no new connections; the open ones are still read
        idle = self._in_flight.stop()
        with contextlib.suppress(TimeoutError):  # aiohttp's cleanup cancels what is still running
            async with asyncio.timeout(self._drain_seconds):
                await idle.wait()
        await super().cleanup()


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = DrainingRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, signalled.set)
        await signalled.wait()
    finally:
        await runner.cleanup()
