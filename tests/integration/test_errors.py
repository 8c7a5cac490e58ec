"""The error middleware's last lines of defence."""

import asyncpg
from aiohttp import web

from service.http.errors import error_middleware
from tests.helpers import expect_error


async def test_text_the_database_cannot_store_is_a_400_even_past_the_input_checks(aiohttp_client):
    """The backstop behind every input check: PostgreSQL's refusal of a NUL is the caller's error."""

    async def stores_a_nul(request: web.Request) -> web.Response:
        raise asyncpg.exceptions.CharacterNotInRepertoireError(
            'invalid byte sequence for encoding "UTF8": 0x00'
        )

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/store", stores_a_nul)
    client = await aiohttp_client(app)
    message = await expect_error(await client.post("/store"), 400, "invalid_request")
    assert "NUL" in message
