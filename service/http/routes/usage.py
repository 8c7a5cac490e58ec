"""`POST /api/v1/usage/`: the gateway reports the requests it let through (service token)."""

from aiohttp import web

from events.usage import UsageBatch
from service.app import usage
from service.http.appkeys import POOL, SETTINGS
from service.http.auth import check_service_token
from service.http.bodies import LARGEST_BODY_LIMIT, read_json
from service.http.responses import UsageAccepted, json_response
from service.metrics import USAGE_EVENTS

routes = web.RouteTableDef()


@routes.post("/api/v1/usage/")
async def record_usage(request: web.Request) -> web.Response:
    check_service_token(request, request.app[SETTINGS].service_token)
    batch = await read_json(request, UsageBatch, limit=LARGEST_BODY_LIMIT)
    metadata = {"actor": "gateway", "client": request.remote}
    accepted, duplicates = await usage.record(request.app[POOL], batch.events, metadata)
    USAGE_EVENTS.labels("accepted").inc(accepted)
    USAGE_EVENTS.labels("duplicate").inc(duplicates)
    return json_response(UsageAccepted(accepted=accepted, duplicates=duplicates), status=202)
