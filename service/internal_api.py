"""Endpoints for keyledger's internal callers (service token): usage from the gateway, billing."""

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from events.account import ACCOUNT_ID_RULE, SetSubscription, is_account_id
from events.usage import UsageBatch, UsageRejected, check_batch
from service import commands, eventstore
from service.appkeys import POOL, SETTINGS
from service.auth import check_service_token
from service.bodies import LARGEST_BODY_LIMIT, read_json
from service.errors import ApiError
from service.metrics import USAGE_EVENTS
from service.responses import SubscriptionState, UsageAccepted
from service.verify_api import catch_up_key_cache

routes = web.RouteTableDef()


class Subscription(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["active", "inactive"]
    # Printable ASCII: a billing plan's name, never a control, bidi or invisible character.
    plan: Annotated[str, msgspec.Meta(max_length=100, pattern=r"^[\x20-\x7e]*(?![\s\S])")] = ""


def _service_caller(request: web.Request) -> None:
    check_service_token(request, request.app[SETTINGS].service_token)


@routes.put("/api/v1/internal/accounts/{account_id}/subscription")
async def set_subscription(request: web.Request) -> web.Response:
    _service_caller(request)
    account_id = request.match_info["account_id"]
    if not is_account_id(account_id):
        raise ApiError(422, "unprocessable", f"account_id must be {ACCOUNT_ID_RULE}.")
    body = await read_json(request, Subscription)
    command = SetSubscription(active=body.status == "active", plan=body.plan)
    metadata = {"actor": "service", "client": request.remote}
    state, _ = await commands.execute(request.app[POOL], account_id, command, metadata)
    await catch_up_key_cache(request.app)
    answer = SubscriptionState(account_id=account_id, status=body.status, plan=state.subscription_plan)
    return web.json_response(body=msgspec.json.encode(answer))


@routes.post("/api/v1/usage/")
async def record_usage(request: web.Request) -> web.Response:
    _service_caller(request)
    batch = await read_json(request, UsageBatch, limit=LARGEST_BODY_LIMIT)
    key_ids = list({report.key_id for report in batch.events})
    async with request.app[POOL].acquire() as connection:
        accounts = dict(
            await connection.fetch("SELECT key_id, account_id FROM api_keys WHERE key_id = ANY($1)", key_ids)
        )
        try:
            recorded = check_batch(batch.events, set(accounts), datetime.now(UTC))
        except UsageRejected as error:
            raise ApiError(422, "unprocessable", error.message) from None
        async with connection.transaction():
            accepted = await eventstore.append_usage(
                connection,
                [(accounts[event.key_id], event) for event in recorded],
                {"actor": "gateway", "client": request.remote},
            )
    answer = UsageAccepted(accepted=accepted, duplicates=len(recorded) - accepted)
    USAGE_EVENTS.labels("accepted").inc(answer.accepted)
    USAGE_EVENTS.labels("duplicate").inc(answer.duplicates)
    return web.json_response(body=msgspec.json.encode(answer), status=202)
