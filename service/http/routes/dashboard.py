"""The API Keys page (issue 7): `GET /` and its files under `GET /dashboard/{file}`.

The page is three plain files in the package folder service/http/dashboard/ (no build step, nothing
fetched from another origin). A request picks a file by its name in FILES, a fixed table built at
import: the path that is opened always comes from that table, never from the request, so `..`,
`%2e%2e`, a NUL or any other name is a 404 envelope and nothing else of the disk can be read.

Every answer carries a Content-Security-Policy that lets the page load only this origin's script,
style and API (no inline script or style, no other origin, no framing, no <base>), and
`Referrer-Policy: no-referrer`. The page signs in with a JWT in the URL fragment (`/#token=…`),
which a browser never sends to a server, and keeps it in sessionStorage; see docs/dashboard.md.

Caching: the files hold no secret (the token stays in the browser, the keys come from /api/
answers, which are no-store), so a browser may keep them. `no-cache` makes it revalidate each time
(FileResponse answers 304 to a matching ETag or date), so a new keyledger never runs stale script.
"""

from pathlib import Path

from aiohttp import web

from service.http.errors import ApiError

routes = web.RouteTableDef()

FOLDER = Path(__file__).parent.parent / "dashboard"
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
FILES: dict[str, tuple[Path, str]] = {name: (FOLDER / name, type_) for name, type_ in _TYPES.items()}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> web.FileResponse:
    path, content_type = FILES[name]
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": content_type})


@routes.get("/")
async def page(request: web.Request) -> web.FileResponse:
    return _file("index.html")


@routes.get("/dashboard/{file}")
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["file"]
    if name not in FILES:
        raise ApiError(404, "not_found", f"The dashboard has no such file; it serves {', '.join(FILES)}.")
    return _file(name)
