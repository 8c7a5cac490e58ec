"""CORS: the one configured dashboard origin may call the API from a browser; no other origin may.

The dashboard sends its user's JWT as `Authorization: Bearer …`, never a cookie, so there is no
credentials mode. A request from the allowed origin gets `Access-Control-Allow-Origin` with that
origin; a request from any other origin gets no CORS header at all (the browser then keeps the
answer from the page), and its preflight is refused with 403. A page served by keyledger itself is
same-origin and needs none of this.

`Vary: Origin` is on every answer once an origin is configured: whether an answer carries
`Access-Control-Allow-Origin` depends on the request's `Origin`, so a cache must not hand one
caller's answer to another.

The one middleware (service/http/middleware.py) applies these: preflights are answered before any
handler (and get the security headers), error envelopes get `Access-Control-Allow-Origin` too (so the
dashboard can show their message).
"""

from aiohttp import hdrs, web

from service.http.errors import error_response

ALLOWED_METHODS = "GET, POST, PATCH, PUT"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-Id"
MAX_AGE_SECONDS = "600"


def is_preflight(request: web.Request) -> bool:
    """Of a request that sent an Origin."""
    return request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers


def preflight(allowed: str | None, origin: str) -> web.Response:
    if origin != allowed:
        return error_response(403, "forbidden", _refusal(allowed))
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: MAX_AGE_SECONDS,
        },
    )


def _refusal(allowed: str | None) -> str:
    if allowed is None:
        return (
            "Cross-origin requests are not allowed: this service has no dashboard origin configured "
            "(KEYLEDGER_DASHBOARD_ORIGIN). Call it from a server, or from a page it serves itself."
        )
    return f"Cross-origin requests are allowed only from the dashboard at {allowed}."


def vary_on_origin(response: web.StreamResponse) -> None:
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = hdrs.ORIGIN
    elif hdrs.ORIGIN.lower() not in {part.strip().lower() for part in vary.split(",")}:
        response.headers[hdrs.VARY] = f"{vary}, {hdrs.ORIGIN}"
