"""Key verification: what the gateway asks on every request (nginx auth_request, ForwardAuth)."""

import functools
import hashlib
import time
from decimal import Decimal

from aiohttp import hdrs, web
from multidict import CIMultiDict

from events import apikey
from events.usage import display_chf
from projections import accounts
from service.app.keycache import KeyEntry
from service.app.spend import month_of
from service.http.appkeys import KEY_CACHE, POOL
from service.http.auth import bearer_token
from service.http.errors import ApiError
from service.http.middleware import NO_STORE, NOSNIFF
from service.http.responses import Verified, encode
from service.metrics import VERIFICATIONS

routes = web.RouteTableDef()

INVALID_KEY = ApiError(403, "forbidden", "Invalid or revoked API key")
EXPIRED_KEY = ApiError(403, "key_expired", "This API key has expired; create a new one or rotate it in time")
NO_SUBSCRIPTION = ApiError(
    402, "subscription_required", "Active subscription required to access this service"
)
# The answer's headers but the key's own two, with the middleware's already in: copied, not built.
VERIFIED_HEADERS = CIMultiDict([(hdrs.CONTENT_TYPE, "application/json"), NOSNIFF, NO_STORE])
_counter = functools.cache(VERIFICATIONS.labels)  # (outcome, source) -> its counter, looked up once


def _spend_limit_reached(limit: Decimal) -> ApiError:
    return ApiError(
        402,
        "spend_limit_reached",
        f"Monthly spend limit of CHF {display_chf(limit)} reached for this API key; it can be raised "
        "in the key's settings, and it resets at the start of the next UTC month",
    )


async def _from_database(
    request: web.Request, digest: bytes, now: float
) -> tuple[KeyEntry | None, bool, bool]:
    """(key, subscribed, over its limit) as the projections hold them."""
    async with request.app[POOL].acquire() as connection:
        row = await accounts.active_key(connection, digest, month_of(now))
    if row is None:
        return None, False, False
    entry = KeyEntry.of(row)
    return entry, row["subscribed"], entry.limit is not None and row["month_cost_chf"] >= entry.limit


@routes.route("GET", "/api/v1/auth/verify")
@routes.route("POST", "/api/v1/auth/verify")
async def verify(request: web.Request) -> web.Response:
    """In the order of SPEC: unknown or revoked, expired, unsubscribed, over the spend limit."""
    key = bearer_token(request, "the API key (sk-…)")
    if not key.isascii():  # not a key of ours (nor encodable: an undecodable byte is a surrogate)
        _counter("malformed", "checksum").inc()
        raise INVALID_KEY
    digest = hashlib.sha256(key.encode()).digest()
    cache, now = request.app[KEY_CACHE], time.time()
    if cache.fresh:
        # A digest the cache holds is of a key this service made, so only a miss needs the checksum
        # to tell a malformed key from an unknown one.
        source, entry = "cache", cache.key(digest)
        if entry is None and not apikey.is_well_formed(key):
            _counter("malformed", "checksum").inc()
            raise INVALID_KEY
        subscribed = entry is not None and cache.subscribed(entry.account_id)
        over_limit = entry is not None and cache.over_limit(entry, now)
    elif not apikey.is_well_formed(key):  # refused without asking the database
        _counter("malformed", "checksum").inc()
        raise INVALID_KEY
    else:  # the cache cannot prove it is fresh: ask the database, fail closed if it cannot answer
        source, (entry, subscribed, over_limit) = "database", await _from_database(request, digest, now)
    if entry is None:
        _counter("invalid", source).inc()
        raise INVALID_KEY
    if entry.expired(now):
        _counter("expired", source).inc()
        raise EXPIRED_KEY
    if not subscribed:
        _counter("unsubscribed", source).inc()
        raise NO_SUBSCRIPTION
    if over_limit:
        _counter("over_limit", source).inc()
        raise _spend_limit_reached(entry.limit)
    _counter("valid", source).inc()
    response = web.Response(
        body=encode(Verified(valid=True, key_id=entry.key_id, account_id=entry.account_id)),
        headers=VERIFIED_HEADERS,
    )
    response.headers.add("X-Keyledger-Key-Id", entry.key_id)
    response.headers.add("X-Keyledger-Account-Id", entry.account_id)
    return response
