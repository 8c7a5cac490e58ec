"""Operations endpoints: liveness and readiness."""

from aiohttp import web

from service.http.appkeys import POOL
from service.http.errors import ApiError
from service.http.responses import Health, json_response
from service.store import migrations

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(Health("ok"))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as connection:
        missing = await migrations.pending(connection)
    if missing:
        raise ApiError(
            503, "service_unavailable", f"Migrations {missing} are not applied; run keyledger migrate."
        )
    return json_response(Health("ready"))
