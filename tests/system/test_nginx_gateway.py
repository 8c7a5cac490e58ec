"""docs/examples/nginx.conf, run by a real nginx in front of a real keyledger and a model API.

Skipped where nginx is not installed; CI installs it, so the documented config cannot rot.
"""

import asyncio
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from events import apikey
from service.http.app import create_app
from tests.helpers import activate, bearer, create_key, deactivate, revoke, wait_until
from tests.processes import free_port

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "nginx.conf"
ACCOUNT = "acct_nginx"


async def model_api(request: web.Request) -> web.Response:
    """The upstream: it sees what nginx forwarded."""
    return web.json_response(
        {name: request.headers.get(name) for name in ("X-Keyledger-Key-Id", "X-Keyledger-Account-Id")}
    )


@pytest.fixture
async def gateway(tmp_path, settings, aiohttp_server, aiohttp_client):
    """nginx with the documented config, its ports pointed at this test's keyledger and model API."""
    keyledger = await aiohttp_server(create_app(settings))
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", model_api)
    upstream = await aiohttp_server(upstream_app)
    port = free_port()
    server_block = (
        EXAMPLE.read_text()
        .replace("127.0.0.1:8080", f"127.0.0.1:{keyledger.port}")
        .replace("127.0.0.1:9000", f"127.0.0.1:{upstream.port}")
        .replace("127.0.0.1:8443", f"127.0.0.1:{port}")
    )
    (tmp_path / "server.conf").write_text(server_block)
    temp_paths = " ".join(
        f"{kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; user root; worker_processes 1; pid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'error.log'};\n"
        f"events {{}}\nhttp {{ access_log off; {temp_paths} include {tmp_path / 'server.conf'}; }}\n"
    )
    nginx = await asyncio.create_subprocess_exec(
        *(
            "nginx",
            "-c",
            str(tmp_path / "nginx.conf"),
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "error.log"),
        ),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            for _ in range(100):
                try:
                    async with session.get("/v1/"):
                        break
                except aiohttp.ClientConnectionError:
                    assert nginx.returncode is None, (tmp_path / "error.log").read_text()
                    await asyncio.sleep(0.05)
            yield session, await aiohttp_client(keyledger), keyledger
    finally:
        nginx.terminate()
        await nginx.wait()


async def answer(session: aiohttp.ClientSession, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with session.post("/v1/chat/completions", headers=headers or {}) as response:
        return response.status, await response.json(content_type=None)


async def settled(session: aiohttp.ClientSession, key: str, status: int) -> None:
    async def answers() -> bool:
        return (await answer(session, bearer(key)))[0] == status

    await wait_until(answers, within=1.0)


async def test_a_valid_key_reaches_the_model_api_with_its_ids(gateway):
    session, keyledger, _ = gateway
    await activate(keyledger, ACCOUNT)
    key = await create_key(keyledger, ACCOUNT)
    assert await answer(session, bearer(key["key"])) == (
        200,
        {"X-Keyledger-Key-Id": key["id"], "X-Keyledger-Account-Id": ACCOUNT},
    )


async def test_refusals_reach_the_caller_as_keyledger_envelopes(gateway):
    session, keyledger, _ = gateway
    key = await create_key(keyledger, ACCOUNT)
    status, body = await answer(session)
    assert (status, body["error"]["type"]) == (401, "authentication_required")
    for refused in ("sk-typo", apikey.generate()):
        assert await answer(session, bearer(refused)) == (
            403,
            {"error": {"message": "Invalid or revoked API key", "type": "forbidden"}},
        )
    await activate(keyledger, ACCOUNT)
    await deactivate(keyledger, ACCOUNT)
    await settled(session, key["key"], 402)  # changes reach the key cache within a second, not at once
    assert await answer(session, bearer(key["key"])) == (
        402,
        {
            "error": {
                "message": "Active subscription required to access this service",
                "type": "subscription_required",
            }
        },
    )
    await activate(keyledger, ACCOUNT)
    await revoke(keyledger, ACCOUNT, key["id"])
    await settled(session, key["key"], 403)


async def test_keyledger_down_answers_503_never_the_model_api(gateway):
    session, keyledger, server = gateway
    await activate(keyledger, ACCOUNT)
    key = await create_key(keyledger, ACCOUNT)
    await server.close()
    status, body = await answer(session, bearer(key["key"]))
    assert (status, body["error"]["type"]) == (503, "service_unavailable")
