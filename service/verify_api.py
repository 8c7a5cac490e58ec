"""Key verification: what the gateway asks on every request (nginx auth_request, ForwardAuth)."""

import asyncio
import hashlib
import logging

import msgspec
from aiohttp import web

from events import apikey
from service.appkeys import KEY_CACHE, POOL
from service.auth import bearer_token
from service.errors import DATABASE_UNAVAILABLE, ApiError
from service.keycache import KeyEntry
from service.metrics import VERIFICATIONS
from service.responses import Verified

routes = web.RouteTableDef()
log = logging.getLogger(__name__)
OWN_CATCH_UP_WAIT = 1.0  # seconds a command's answer waits for this process's key cache, at most

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


async def catch_up_key_cache(app: web.Application) -> None:
    """After a lifecycle command of this process: its own key cache reflects it before the answer.

    Best effort: the command has committed, so a database that fails now must not turn its answer
    (a new key shown only once) into an error; the listener catches up when it can."""
    try:
        # Bounded: the listener may hold the cache's catch-up lock on a connection that hangs.
        async with asyncio.timeout(OWN_CATCH_UP_WAIT), app[POOL].acquire() as connection:
            await app[KEY_CACHE].catch_up(connection)
    except DATABASE_UNAVAILABLE as error:
        log.warning("key cache not caught up after a command (%s)", type(error).__name__)


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
    if not subscribed:
        VERIFICATIONS.labels("unsubscribed", source).inc()
        raise NO_SUBSCRIPTION
    VERIFICATIONS.labels("valid", source).inc()
    return web.Response(
        body=msgspec.json.encode(Verified(valid=True, key_id=entry.key_id, account_id=entry.account_id)),
        content_type="application/json",
        headers={"X-Keyledger-Key-Id": entry.key_id, "X-Keyledger-Account-Id": entry.account_id},
    )
