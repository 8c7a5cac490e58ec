"""Serving an app until SIGTERM or SIGINT, letting the requests in flight finish first.

aiohttp's run_app starts its shutdown at the signal, and from then on it drops what arrives on a
connection (aio-libs/aiohttp#2298): a request whose body was still arriving would never complete. So
the order here is: stop listening, let every request in flight finish (their connections are still
read, their answers close them), and only then run aiohttp's cleanup and the app's (key cache,
projector, pool).
"""

import asyncio
import signal
import socket

from aiohttp import web

from service.http.access_log import AccessLog

DRAIN_SECONDS = 60.0  # the longest a request in flight may take once stopping


def serve(
    app: web.Application,
    *,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Serve on host:port, or on an already listening socket, until one of `signals` arrives."""
    asyncio.run(_serve(app, host, port, sock, signals))


def _track_requests(app: web.Application) -> tuple[asyncio.Event, asyncio.Event]:
    """Events `stopping` (set it to make every answer close its connection) and `idle` (set while no
    request is in flight)."""
    stopping, idle = asyncio.Event(), asyncio.Event()
    idle.set()
    in_flight = 0

    @web.middleware
    async def count(request: web.Request, handler) -> web.StreamResponse:
        nonlocal in_flight
        in_flight += 1
        idle.clear()
        try:
            response = await handler(request)
            if stopping.is_set():
                response.force_close()
            return response
        finally:
            in_flight -= 1
            if not in_flight:
                idle.set()

    app.middlewares.insert(0, count)
    return stopping, idle


async def _serve(app, host, port, sock, signals) -> None:
    stopping, idle = _track_requests(app)
    runner = web.AppRunner(app, handle_signals=False, access_log_class=AccessLog)
    await runner.setup()
    try:
        site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
        await site.start()
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in signals:
            loop.add_signal_handler(signum, signalled.set)
        await signalled.wait()
        await site.stop()  # no new connections; the open ones are still read
        stopping.set()
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await idle.wait()
        except TimeoutError:
            pass  # the cleanup below cancels what is still running
    finally:
        await runner.cleanup()
