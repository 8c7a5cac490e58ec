"""Operations endpoints: liveness and readiness."""

from aiohttp import web

from service import migrations
from service.appkeys import POOL
from service.errors import ApiError

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as connection:
        missing = await migrations.pending(connection)
    if missing:
        raise ApiError(
            503, "service_unavailable", f"Migrations {missing} are not applied; run keyledger migrate."
        )
    return web.json_response({"status": "ready"})
