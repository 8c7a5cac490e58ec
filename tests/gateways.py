"""What the gateway tests share: a gateway process in front of a real keyledger and a model API, a key
in every verification state, and the checks every gateway must pass.

A gateway passes keyledger's refusals through unchanged when the caller gets, through it, exactly
what keyledger answers that key directly: `assert_refusals_pass_through` checks that for each
refusal of SPEC "Expiry, rotation, spend limits" (403 forbidden and key_expired, 402
subscription_required and spend_limit_reached).
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.http.app import create_app
from tests.helpers import (
    KEYS,
    activate,
    auth,
    bearer,
    create_key,
    deactivate,
    expect,
    revoke,
    send_usage,
    usage_event,
    verify,
    wait_until,
)
from tests.processes import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

ID_HEADERS = ("X-Keyledger-Key-Id", "X-Keyledger-Account-Id")
REFUSALS = {  # the key's state -> what verification answers
    "revoked": (403, "forbidden"),
    "expired": (403, "key_expired"),
    "unsubscribed": (402, "subscription_required"),
    "over_limit": (402, "spend_limit_reached"),
}

Answer = tuple[int, dict]


async def model_api(request: web.Request) -> web.Response:
    """The upstream: it answers with the id headers the gateway forwarded."""
    return web.json_response({name: request.headers.get(name) for name in ID_HEADERS})


def model_api_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", model_api)
    return app


@dataclass
class Gateway:
    session: aiohttp.ClientSession  # the caller's, to the gateway
    keyledger: TestClient  # straight to keyledger
    keyledger_server: TestServer


@asynccontextmanager
async def running(
    example: Path,
    config: Path,
    log: Callable[[], str],
    start: Callable[[Path], Awaitable[asyncio.subprocess.Process]],
    settings,
    aiohttp_server,
    aiohttp_client,
) -> AsyncIterator[Gateway]:
    """The gateway `start(config)` runs, with the example's addresses pointed at this test's keyledger
    (8080 in the example) and model API (9000), listening on a free port instead of 8443."""
    keyledger = await aiohttp_server(create_app(settings))
    upstream = await aiohttp_server(model_api_app())
    port = free_port()
    _point_at(example, config, keyledger.port, upstream.port, port)
    process = await start(config)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            await _listening(session, process, log)
            yield Gateway(session, await aiohttp_client(keyledger), keyledger)
    finally:
        process.terminate()
        await process.wait()


def _point_at(example: Path, config: Path, keyledger: int, upstream: int, port: int) -> None:
    config.write_text(
        example.read_text()
        .replace("127.0.0.1:8080", f"127.0.0.1:{keyledger}")
        .replace("127.0.0.1:9000", f"127.0.0.1:{upstream}")
        .replace("127.0.0.1:8443", f"127.0.0.1:{port}")
    )


async def _listening(
    session: aiohttp.ClientSession, process: asyncio.subprocess.Process, log: Callable[[], str]
) -> None:
    for _ in range(200):
        try:
            async with session.get("/v1/"):
                return
        except aiohttp.ClientConnectionError:
            assert process.returncode is None, log()
            await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway does not listen: {log()}")


async def through(gateway: Gateway, headers: dict[str, str]) -> Answer:
    """A caller's request to the model API, through the gateway."""
    async with gateway.session.post("/v1/chat/completions", headers=headers, data=b"{}") as response:
        return response.status, await response.json(content_type=None)


async def _answer(keyledger, secret: str) -> Answer:
    response = await verify(keyledger, secret)
    return response.status, await response.json()


async def keys_in_every_state(keyledger, account: str) -> dict[str, str]:
    """The secret of one key per REFUSALS state (and a valid one), each already answered so by keyledger."""
    unsubscribed_account = f"{account}_unsubscribed"
    await activate(keyledger, account)
    await activate(keyledger, unsubscribed_account)
    await deactivate(keyledger, unsubscribed_account)
    revoked = await create_key(keyledger, account)
    await revoke(keyledger, account, revoked["id"])
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = {"name": "Expiring", "expires_at": soon}
    limited = {"name": "Metered", "monthly_spend_limit_chf": "0.0001"}
    keys = {"valid": await create_key(keyledger, account), "revoked": revoked}
    for state, body in (("expired", expiring), ("over_limit", limited)):
        response = await keyledger.post(f"{KEYS}/create/", json=body, headers=auth(account))
        keys[state] = await expect(response, 201)
    keys["unsubscribed"] = await create_key(keyledger, unsubscribed_account)
    usage = [usage_event(keys["over_limit"]["id"], f"gateway-{keys['over_limit']['id']}", "0.0001")]
    await expect(await send_usage(keyledger, usage), 202)
    expected = {"valid": (200, None), **REFUSALS}

    async def settled() -> bool:
        for state, (status, type_) in expected.items():
            got_status, body = await _answer(keyledger, keys[state]["key"])
            if (got_status, body.get("error", {}).get("type")) != (status, type_):
                return False
        return True

    await wait_until(settled, within=5.0)  # the expiry instant, the projector folding the usage
    return {state: key["key"] for state, key in keys.items()}


async def assert_refusals_pass_through(
    keyledger, secrets: dict[str, str], through_gateway: Callable[[dict[str, str]], Awaitable[Answer]]
) -> None:
    """Every refused key gets, through the gateway, keyledger's own status and JSON body."""
    for state, (status, type_) in REFUSALS.items():
        direct = await _answer(keyledger, secrets[state])
        assert (direct[0], direct[1]["error"]["type"]) == (status, type_), direct
        assert await through_gateway(bearer(secrets[state])) == direct, state


class GatewayChecks:
    """What every gateway passes; a test module subclasses it as Test…, with its own `gateway` fixture."""

    account: str

    async def test_a_valid_key_reaches_the_model_api_with_its_ids_not_forged_ones(self, gateway: Gateway):
        secrets = await keys_in_every_state(gateway.keyledger, self.account)
        verified = await (await verify(gateway.keyledger, secrets["valid"])).json()
        forged = dict.fromkeys(ID_HEADERS, "key_forged")
        assert await through(gateway, {**bearer(secrets["valid"]), **forged}) == (
            200,
            {"X-Keyledger-Key-Id": verified["key_id"], "X-Keyledger-Account-Id": self.account},
        )

    async def test_every_refusal_reaches_the_caller_as_keyledger_answers_it(self, gateway: Gateway):
        """402 and 403 with keyledger's status and body: not a 500 (nginx auth_request alone would
        give one for 402), not a body of the gateway's."""
        secrets = await keys_in_every_state(gateway.keyledger, self.account)
        await assert_refusals_pass_through(
            gateway.keyledger, secrets, lambda headers: through(gateway, headers)
        )
        async with gateway.session.post("/v1/chat/completions") as anonymous:
            assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await anonymous.json())["error"]["type"] == "authentication_required"
        async with gateway.session.post("/v1/chat/completions", headers=bearer("sk-typo")) as malformed:
            assert malformed.status == 403 and not set(ID_HEADERS) & set(malformed.headers)

    async def test_keyledger_down_answers_a_503_envelope_never_the_model_api(self, gateway: Gateway):
        secrets = await keys_in_every_state(gateway.keyledger, self.account)
        await gateway.keyledger_server.close()
        status, body = await through(gateway, bearer(secrets["valid"]))
        assert (status, body["error"]["type"]) == (503, "service_unavailable")
