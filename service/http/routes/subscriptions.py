"""`PUT /api/v1/internal/accounts/{account_id}/subscription`: billing turns an account on or off."""

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from events.account import SetSubscription
from events.rules import ACCOUNT_ID_RULE, is_account_id
from service.app import commands
from service.http.appkeys import KEY_CACHE, POOL, SETTINGS
from service.http.auth import check_service_token
from service.http.bodies import read_json
from service.http.errors import ApiError
from service.http.responses import SubscriptionState, json_response

routes = web.RouteTableDef()


class Subscription(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["active", "inactive"]
    # Printable ASCII: a billing plan's name, never a control, bidi or invisible character.
    plan: Annotated[str, msgspec.Meta(max_length=100, pattern=r"^[\x20-\x7e]*(?![\s\S])")] = ""


@routes.put("/api/v1/internal/accounts/{account_id}/subscription")
async def set_subscription(request: web.Request) -> web.Response:
    check_service_token(request, request.app[SETTINGS].service_token)
    account_id = request.match_info["account_id"]
    if not is_account_id(account_id):
        raise ApiError(400, "invalid_request", f"account_id must be {ACCOUNT_ID_RULE}.")
    body = await read_json(request, Subscription)
    command = SetSubscription(active=body.status == "active", plan=body.plan)
    metadata = {"actor": "service", "client": request.remote}
    pool = request.app[POOL]
    state, _ = await commands.execute(pool, account_id, command, metadata)
    await request.app[KEY_CACHE].after_own_command(pool)
    return json_response(
        SubscriptionState(account_id=account_id, status=body.status, plan=state.subscription_plan)
    )
