"""The baseline for verification: a bare aiohttp handler returning 200, in a process of its own."""

import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"valid": True})


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/api/v1/auth/verify", ok)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
