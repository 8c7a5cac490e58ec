"""Key verification: what the gateway asks on every request (nginx auth_request, ForwardAuth)."""

import hashlib
import time

from aiohttp import web

from events import apikey
from projections import accounts
from service.app.keycache import KeyEntry
from service.http.appkeys import KEY_CACHE, POOL
from service.http.auth import bearer_token
from service.http.errors import ApiError
from service.http.responses import Verified, json_response
from service.metrics import VERIFICATIONS

routes = web.RouteTableDef()

INVALID_KEY = ApiError(403, "forbidden", "Invalid or revoked API key")
EXPIRED_KEY = ApiError(403, "key_expired", "This API key has expired; create a new one or rotate it in time")
NO_SUBSCRIPTION = ApiError(
    402, "subscription_required", "Active subscription required to access this service"
)


async def _from_database(request: web.Request, digest: bytes) -> tuple[KeyEntry | None, bool]:
    async with request.app[POOL].acquire() as connection:
        row = await accounts.active_key(connection, digest)
    if row is None:
        return None, False
    return KeyEntry.of(row), row["subscribed"]


@routes.route("GET", "/api/v1/auth/verify")
@routes.route("POST", "/api/v1/auth/verify")
async def verify(request: web.Request) -> web.Response:
    key = bearer_token(request, "the API key (sk-…)")
    if not apikey.is_well_formed(key):
        VERIFICATIONS.labels("malformed", "checksum").inc()
        raise INVALID_KEY
    digest = hashlib.sha256(key.encode()).digest()
    cache = request.app[KEY_CACHE]
    if cache.fresh:
        source, entry = "cache", cache.key(digest)
        subscribed = entry is not None and cache.subscribed(entry.account_id)
    else:  # the cache cannot prove it is fresh: ask the database, fail closed if it cannot answer
        source, (entry, subscribed) = "database", await _from_database(request, digest)
    if entry is None:
        VERIFICATIONS.labels("invalid", source).inc()
        raise INVALID_KEY
    if entry.expired(time.time()):
        VERIFICATIONS.labels("expired", source).inc()
        raise EXPIRED_KEY
    if not subscribed:
        VERIFICATIONS.labels("unsubscribed", source).inc()
        raise NO_SUBSCRIPTION
    VERIFICATIONS.labels("valid", source).inc()
    return json_response(
        Verified(valid=True, key_id=entry.key_id, account_id=entry.account_id),
        headers={"X-Keyledger-Key-Id": entry.key_id, "X-Keyledger-Account-Id": entry.account_id},
    )
