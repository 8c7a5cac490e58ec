"""The middlewares every answer passes through, besides CORS (cors.py) and errors (errors.py)."""

import time

from aiohttp import web

from service.metrics import DURATION, REQUESTS


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def measure(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exception:  # only redirects get here: errors are answers already
        status = exception.status
        raise
    finally:
        route = route_of(request)
        REQUESTS.labels(route, request.method, str(status)).inc()
        DURATION.labels(route).observe(time.perf_counter() - started)
