"""The one middleware every answer passes through, and the counting of every answer.

`answering()` folds what used to be five middlewares into one layer, because each layer costs about
as much as the key verification it wraps (docs/benchmarks.md): the requests in flight (so that a
stopping server lets them finish, service/http/serving.py), CORS (its rules in cors.py), the error
envelope (errors.py) and the security headers. Their order still holds: an error envelope gets the
CORS and security headers, a preflight answer the security headers.

The metrics of each answer are counted by `count_answer`, which the connection handler calls after
the answer is sent, where aiohttp calls its access logger (service/http/protocol.py): no layer, and
the parser's own refusals are counted too.
"""

import asyncio

from aiohttp import hdrs, web

from service.http import cors
from service.http.errors import error_answer
from service.metrics import DURATION, REQUESTS
from service.store import db

NOSNIFF = ("X-Content-Type-Options", "nosniff")
NO_STORE = ("Cache-Control", "no-store")


class InFlight:
    """The requests being answered; once `stop()` is called, every answer closes its connection."""

    __slots__ = ("count", "idle", "stopping")

    def __init__(self):
        self.count = 0
        self.stopping = False
        self.idle: asyncio.Event | None = None  # made by stop(): no event to set while serving

    def stop(self) -> asyncio.Event:
        """Stop; the event is set once no request is in flight."""
        self.stopping = True
        self.idle = asyncio.Event()
        if not self.count:
            self.idle.set()
        return self.idle

    def ended(self) -> None:
        self.count -= 1
        if self.idle is not None and not self.count:
            self.idle.set()


def answering(dashboard_origin: str | None, in_flight: InFlight):
    """The middleware of create_app, for the configured dashboard origin (None: no CORS)."""

    @web.middleware
    async def answer(request: web.Request, handler) -> web.StreamResponse:
        in_flight.count += 1
        try:
            origin = request.headers.get(hdrs.ORIGIN)
            if origin is not None and cors.is_preflight(request):
                response = cors.preflight(dashboard_origin, origin)
            else:
                try:
                    with db.one_deadline():  # however often the request uses the database
                        response = await handler(request)
                except Exception as error:  # redirects are raised on, as aiohttp expects them
                    response = error_answer(error, request)
                if origin is not None and origin == dashboard_origin and not response.prepared:
                    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            headers = response.headers
            headers.setdefault(*NOSNIFF)
            # raw_path first: no decoding, and when it starts so, the path does too (or is
            # dot-segments away from it, where no-store is harmless); the path decides otherwise.
            if request.raw_path.startswith("/api/") or request.path.startswith("/api/"):
                headers.setdefault(*NO_STORE)
            if dashboard_origin is not None and not response.prepared:
                cors.vary_on_origin(response)
            if in_flight.stopping:
                response.force_close()
            return response
        finally:
            in_flight.ended()

    return answer


def route_of(request: web.BaseRequest) -> str:
    """The route template, never the path itself (a key id in a label would grow without bound)."""
    # aiohttp's Request.match_info asserts it is set; it is not for a request the parser refused.
    match_info = getattr(request, "_match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "unmatched"


_series: dict[tuple[str, str, int], tuple] = {}  # (route, method, status) -> its counter and histogram


def count_answer(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> None:
    """Count an answer sent (prometheus' label lookup costs more than the count, so it is kept)."""
    route, method, status = route_of(request), request.method, response.status
    series = _series.get((route, method, status))
    if series is None:
        series = _series[route, method, status] = (
            REQUESTS.labels(route, method, str(status)),
            DURATION.labels(route),
        )
    series[0].inc()
    series[1].observe(seconds)
