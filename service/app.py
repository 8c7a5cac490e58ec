"""The aiohttp application factory, used by the CLI, by gunicorn's aiohttp worker and by the tests."""

from collections.abc import AsyncIterator

from aiohttp import web

from service import db, keys_api, ops_api
from service.appkeys import POOL, SETTINGS, TOKENS
from service.auth import TokenVerifier
from service.bodies import LARGEST_BODY_LIMIT
from service.config import Settings
from service.errors import error_middleware


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.database_url is None:
        raise RuntimeError("Settings.database_url must be set before the app starts (the CLI resolves it)")
    app[POOL] = await db.create_pool(settings.database_url, settings.pool_max_size)
    yield
    await app[POOL].close()


def create_app(settings: Settings) -> web.Application:
    # security_headers sits outside error_middleware so error envelopes get the headers too.
    app = web.Application(
        middlewares=[security_headers, error_middleware], client_max_size=LARGEST_BODY_LIMIT
    )
    app[SETTINGS] = settings
    app[TOKENS] = TokenVerifier(settings)
    app.cleanup_ctx.append(_database)
    app.add_routes(keys_api.routes)
    app.add_routes(ops_api.routes)
    return app
