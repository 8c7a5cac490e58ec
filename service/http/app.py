"""The aiohttp application factories: `create_app(settings)` for the CLI and the tests, and
`app_from_environment()` for gunicorn (`keyledger serve --workers N`)."""

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from events.log import USAGE_CHANNEL
from events.note import NoteError, Signer
from projections.projector import Projector
from service.app.checkpoints import TreeWriter
from service.app.keycache import KeyCache
from service.config import ConfigError, Settings, from_environment
from service.http.appkeys import IN_FLIGHT, KEY_CACHE, POOL, PROJECTOR, SETTINGS, SIGNER, TOKENS
from service.http.auth import TokenVerifier
from service.http.bodies import LARGEST_BODY_LIMIT
from service.http.middleware import InFlight, answering
from service.http.openapi import routes as openapi_routes
from service.http.protocol import protocol_options
from service.http.routes import ROUTES
from service.store import db

WARM_UP_SECONDS = 5.0
KEY_CACHE_CONNECTION = "keyledger key cache"  # its application_name
log = logging.getLogger(__name__)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.database_url is None:
        raise RuntimeError("Settings.database_url must be set before the app starts (the CLI resolves it)")
    app[POOL] = await db.create_pool(settings.database_url, settings.pool_max_size)
    yield
    await app[POOL].close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The key cache and the projector run beside the request handlers, for the app's lifetime."""
    app[KEY_CACHE] = KeyCache()
    app[PROJECTOR] = Projector(USAGE_CHANNEL)
    url = app[SETTINGS].database_url
    # Named (application_name), so that an operator tells them apart in pg_stat_activity.
    cache_connection = functools.partial(db.connect, url, KEY_CACHE_CONNECTION)
    projector_connection = functools.partial(db.connect, url, "keyledger projector")
    settings = app[SETTINGS]
    writer = TreeWriter(app[SIGNER], settings.log_origin, settings.checkpoint_interval)
    tree_connection = functools.partial(db.connect, url, "keyledger tree writer")
    tasks = [
        asyncio.create_task(
            db.keep_connected(cache_connection, app[KEY_CACHE].follow, "key cache", pause=0.2)
        ),
        asyncio.create_task(
            db.keep_connected(projector_connection, app[PROJECTOR].lead, "projector", pause=1.0)
        ),
        asyncio.create_task(db.keep_connected(tree_connection, writer.lead, "tree writer", pause=1.0)),
    ]
    with contextlib.suppress(TimeoutError):  # serve from a warm cache when the database allows it
        async with asyncio.timeout(WARM_UP_SECONDS):
            await app[KEY_CACHE].warmed.wait()
    yield
    for task in tasks:
        task.cancel()
    # A cancellation that lands inside a query can surface as asyncpg's InternalClientError instead
    # of CancelledError; either way the task is over, and shutting down must not fail on it.
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if not isinstance(outcome, asyncio.CancelledError | None):
            log.warning("a background task ended with %s while stopping", type(outcome).__name__)


def create_app(settings: Settings) -> web.Application:
    # One middleware (service/http/middleware.py); the connection handler counts the answers.
    in_flight = InFlight()
    app = web.Application(
        middlewares=[answering(settings.dashboard_origin, in_flight)],
        client_max_size=LARGEST_BODY_LIMIT,
        handler_args=protocol_options(),
    )
    app[SETTINGS], app[IN_FLIGHT] = settings, in_flight
    app[TOKENS] = TokenVerifier(settings)
    app[SIGNER] = checkpoint_signer(settings)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_background)
    for routes in (*ROUTES, openapi_routes):
        app.add_routes(routes)
    return app


def key_name(origin: str) -> str:
    """A note key's name for the origin (a name holds no '+' and no space)."""
    return "".join("-" if c == "+" or c.isspace() else c for c in origin) or "keyledger"


def checkpoint_signer(settings: Settings) -> Signer:
    """The configured signer key; without one, a key for this app's lifetime (tests, embedding):
    `keyledger serve` always configures one, so its processes sign with the same key."""
    if settings.checkpoint_key is None:
        return Signer.generate(key_name(settings.log_origin))
    try:
        return Signer.parse(settings.checkpoint_key)
    except NoteError as error:  # the message names the form, never the key
        raise ConfigError(f"KEYLEDGER_CHECKPOINT_KEY is not a note signer key: {error}") from None


def app_from_environment() -> web.Application:
    """The app of one gunicorn worker. Workers share nothing but the environment, so nothing may be
    made up per process: the service token, the JWT key and the database must all be set there
    (`keyledger serve --workers N` sets the ones it generated or started before gunicorn starts)."""
    settings = from_environment()
    made_up = settings.development or not os.environ.get("KEYLEDGER_SERVICE_TOKEN")
    if made_up or not settings.database_url or settings.checkpoint_key is None:
        raise ConfigError(
            "Each gunicorn worker reads its settings from the environment: set KEYLEDGER_DATABASE_URL, "
            "KEYLEDGER_SERVICE_TOKEN and KEYLEDGER_JWT_SECRET (or KEYLEDGER_JWT_PUBLIC_KEY), and "
            "KEYLEDGER_CHECKPOINT_KEY, or run `keyledger serve --workers N`, which sets them."
        )
    return create_app(settings)
