"""The access log leaves out successful key verifications (the hot path) and keeps everything else."""

import logging

import pytest
from aiohttp.test_utils import TestServer

from service.http.access_log import AccessLog
from service.http.app import create_app
from tests.helpers import KEYS, activate, bearer, create_key, wait_until

pytestmark = pytest.mark.server_independent  # HTTP parsing and our code: CI's second pass leaves it out


@pytest.fixture
async def logged_client(aiohttp_client, settings, caplog):
    """A server with the access log `keyledger serve` uses (started first: aiohttp_client drops
    server_kwargs it does not know)."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before the server decides whether to log
    server = TestServer(create_app(settings))
    await server.start_server(access_log_class=AccessLog)
    return await aiohttp_client(server)


async def test_only_successful_verifications_are_left_out(logged_client, caplog):
    await activate(logged_client, "acct_log")
    key = await create_key(logged_client, "acct_log")

    async def verified() -> bool:
        return (await logged_client.get("/api/v1/auth/verify", headers=bearer(key["key"]))).status == 200

    await wait_until(verified, within=2)
    caplog.clear()
    assert (await logged_client.get("/api/v1/auth/verify", headers=bearer(key["key"]))).status == 200
    assert (await logged_client.get("/api/v1/auth/verify", headers=bearer("sk-nope"))).status == 403
    assert (await logged_client.get(f"{KEYS}/")).status == 401
    lines = [record.getMessage() for record in caplog.records if record.name == "aiohttp.access"]
    assert len(lines) == 2, lines
    assert '"GET /api/v1/auth/verify HTTP/1.1" 403' in lines[0]
    assert f'"GET {KEYS}/ HTTP/1.1" 401' in lines[1]
