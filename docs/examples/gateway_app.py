"""A tiny AI-API-like service protected by keyledger keys, billed per request.

Run keyledger (`make run`), then, with the service token it printed:

    KEYLEDGER_SERVICE_TOKEN=… .venv/bin/python docs/examples/gateway_app.py
    curl -s http://127.0.0.1:8081/v1/echo -H "Authorization: Bearer sk-…"

Each answered request costs 0.000150 CHF and shows up in the key's usage within a second.
"""

import os

from aiohttp import web

from service.client import KEY_ID, KeyledgerClient, keyledger_middleware


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world", "key_id": request[KEY_ID]})


def create_app() -> web.Application:
    client = KeyledgerClient(
        os.environ.get("KEYLEDGER_URL", "http://127.0.0.1:8080"), os.environ["KEYLEDGER_SERVICE_TOKEN"]
    )
    app = web.Application(middlewares=[keyledger_middleware(client, cost_of=lambda *_: "0.000150")])
    client.setup(app)
    app.router.add_get("/v1/echo", echo)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=8081)
