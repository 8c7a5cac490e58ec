"""The client middleware against a real keyledger: a gateway app of ours in front of it."""

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.client import KEY_ID, KeyledgerClient, keyledger_middleware
from service.http.app import create_app
from tests.gateways import assert_refusals_pass_through, keys_in_every_state
from tests.helpers import SERVICE_TOKEN, auth, bearer
from tests.processes import free_port

BASE = "/api/v1/accounts/user/api-keys"
ACCOUNT = "acct_client"


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"key_id": request[KEY_ID]})


@pytest.fixture
async def keyledger(settings):
    async with TestClient(TestServer(create_app(settings))) as client:
        await client.put(
            f"/api/v1/internal/accounts/{ACCOUNT}/subscription",
            json={"status": "active", "plan": "pro"},
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        )
        yield client


def gateway_app(keyledger, **client_options) -> tuple[web.Application, KeyledgerClient]:
    client = KeyledgerClient(str(keyledger.make_url("")), SERVICE_TOKEN, cache_seconds=0, **client_options)
    app = web.Application(middlewares=[keyledger_middleware(client, cost_of=lambda *_: "0.000150")])
    client.setup(app)
    app.router.add_get("/v1/hello", hello)
    return app, client


async def create_key(keyledger) -> dict:
    response = await keyledger.post(f"{BASE}/create/", json={"name": "gateway"}, headers=auth(ACCOUNT))
    return await response.json()


async def key_usage(keyledger, key_id: str) -> dict:
    return (await (await keyledger.get(f"{BASE}/{key_id}/", headers=auth(ACCOUNT))).json())["usage"]


async def eventually(check, within: float = 3.0):
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_valid_key_passes_revoked_key_is_refused(keyledger, aiohttp_client):
    app, _ = gateway_app(keyledger)
    gateway = await aiohttp_client(app)
    key = await create_key(keyledger)
    bearer = {"Authorization": f"Bearer {key['key']}"}

    served = await gateway.get("/v1/hello", headers=bearer)
    assert served.status == 200 and (await served.json())["key_id"] == key["id"]

    await keyledger.post(f"{BASE}/{key['id']}/revoke/", headers=auth(ACCOUNT))
    refused = await gateway.get("/v1/hello", headers=bearer)
    assert refused.status == 403
    assert await refused.json() == {"error": {"message": "Invalid or revoked API key", "type": "forbidden"}}
    missing = await gateway.get("/v1/hello")
    assert missing.status == 401 and (await missing.json())["error"]["type"] == "authentication_required"


async def test_every_refusal_reaches_the_caller_as_keyledger_answers_it(keyledger, aiohttp_client):
    """403 forbidden and key_expired, 402 subscription_required and spend_limit_reached: the
    gateway's caller gets keyledger's status and body, not a status or message of the client's."""
    app, _ = gateway_app(keyledger)
    gateway = await aiohttp_client(app)
    secrets = await keys_in_every_state(keyledger, "acct_client_states")

    async def through_gateway(headers: dict[str, str]) -> tuple[int, dict]:
        response = await gateway.get("/v1/hello", headers=headers)
        assert response.content_type == "application/json"
        return response.status, await response.json()

    await assert_refusals_pass_through(keyledger, secrets, through_gateway)
    assert (await gateway.get("/v1/hello", headers=bearer(secrets["valid"]))).status == 200


async def test_usage_reported_by_the_middleware_shows_in_the_key_stats(keyledger, aiohttp_client):
    app, _ = gateway_app(keyledger, flush_interval=0.05)
    gateway = await aiohttp_client(app)
    key = await create_key(keyledger)
    for _ in range(3):
        assert (
            await gateway.get("/v1/hello", headers={"Authorization": f"Bearer {key['key']}"})
        ).status == 200

    async def counted():
        usage = await key_usage(keyledger, key["id"])
        return usage["total_requests"] == 3 and usage["total_cost_chf"] == "0.000450000"

    await eventually(counted)


async def test_shutdown_flushes_the_buffer(keyledger):
    app, _ = gateway_app(keyledger, flush_interval=3600)  # only the shutdown flush can send it
    key = await create_key(keyledger)
    async with TestClient(TestServer(app)) as gateway:
        for _ in range(5):
            await gateway.get("/v1/hello", headers={"Authorization": f"Bearer {key['key']}"})
        await asyncio.sleep(0.3)
        assert (await key_usage(keyledger, key["id"]))["total_requests"] == 0

    async def flushed():
        return (await key_usage(keyledger, key["id"]))["total_requests"] == 5

    await eventually(flushed)


async def test_close_resends_the_batch_the_flusher_was_cut_off_sending(settings, admin):
    """The flusher has taken a batch out of the buffer and keeps retrying it (keyledger is not up yet)
    when the gateway shuts down: close() must send that batch, not drop it."""
    port = free_port()
    client = KeyledgerClient(f"http://127.0.0.1:{port}", SERVICE_TOKEN, flush_interval=0.01)
    await client.start()
    async with TestClient(TestServer(create_app(settings))) as setup:
        key = await create_key(setup)
    for _ in range(3):
        await client.report(key["id"], "0.000150", endpoint="/v1/hello")
    while not client._buffer.empty():  # noqa: ASYNC110 (the flusher takes them, then retries a refused connection)
        await asyncio.sleep(0.01)
    async with TestServer(create_app(settings), port=port):
        await client.close()
    stored = await admin.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'")
    assert stored == 3


async def test_a_report_keyledger_refuses_is_dropped_and_the_rest_of_its_batch_delivered(keyledger, admin):
    """A malformed cost (400) and an unknown key (422) name their event: the client drops each one
    instead of resending the batch forever, and delivers the good reports beside them."""
    key = await create_key(keyledger)
    client = KeyledgerClient(str(keyledger.make_url("")), SERVICE_TOKEN, flush_interval=3600)
    await client.start()
    await client.report(key["id"], "0.000100", request_id="good-1")
    await client.report(key["id"], "1e-3", request_id="malformed-cost")
    await client.report("key_0000000000000000000000", "0.000100", request_id="unknown-key")
    await client.report(key["id"], "0.000100", request_id="good-2")
    async with asyncio.timeout(10):  # a client that resends a refused batch forever fails here
        await client.close()  # the shutdown flush sends the four in one batch
    stored = await admin.fetch("SELECT data->>'request_id' AS id FROM event_log WHERE type = 'UsageRecorded'")
    assert sorted(row["id"] for row in stored) == ["good-1", "good-2"]
