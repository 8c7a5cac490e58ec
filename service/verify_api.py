"""Key verification: what the gateway asks on every request (nginx auth_request, ForwardAuth)."""

import hashlib

from aiohttp import web

from events import apikey
from service.appkeys import KEY_CACHE, POOL
from service.auth import bearer_token
from service.errors import ApiError
from service.keycache import KeyEntry

routes = web.RouteTableDef()

INVALID_KEY = ApiError(403, "forbidden", "Invalid or revoked API key")
NO_SUBSCRIPTION = ApiError(
    402, "subscription_required", "Active subscription required to access this service"
)


async def _from_database(request: web.Request, digest: bytes) -> tuple[KeyEntry | None, bool]:
    async with request.app[POOL].acquire() as connection:
        row = await connection.fetchrow(
            """SELECT k.key_id, k.account_id, coalesce(s.status = 'active', false) AS subscribed
               FROM api_keys k LEFT JOIN subscriptions s USING (account_id)
               WHERE k.key_digest = $1 AND k.status = 'active'""",
            digest,
        )
    if row is None:
        return None, False
    return KeyEntry(row["key_id"], row["account_id"]), row["subscribed"]


@routes.route("GET", "/api/v1/auth/verify")
@routes.route("POST", "/api/v1/auth/verify")
async def verify(request: web.Request) -> web.Response:
    key = bearer_token(request, "the API key (sk-…)")
    if not apikey.is_well_formed(key):
        raise INVALID_KEY
    digest = hashlib.sha256(key.encode()).digest()
    cache = request.app[KEY_CACHE]
    if cache.fresh:
        entry = cache.key(digest)
        subscribed = entry is not None and cache.subscribed(entry.account_id)
    else:  # the cache cannot prove it is fresh: ask the database, fail closed if it cannot answer
        entry, subscribed = await _from_database(request, digest)
    if entry is None:
        raise INVALID_KEY
    if not subscribed:
        raise NO_SUBSCRIPTION
    return web.json_response(
        {"valid": True, "key_id": entry.key_id, "account_id": entry.account_id},
        headers={"X-Keyledger-Key-Id": entry.key_id, "X-Keyledger-Account-Id": entry.account_id},
    )
