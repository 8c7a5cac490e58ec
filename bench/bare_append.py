"""The baseline for lifecycle commands: a bare aiohttp handler that appends one row in a transaction of
its own under one advisory lock (as every append of the log serialises), in a process of its own.

No authentication, no decision, no hash chain, no projection, no key cache: what an HTTP command that
appends one event costs at the least on this machine, measured in the same run.
"""

import sys

import asyncpg
from aiohttp import web

LOCK = 0x62617265  # any constant: only this app takes it
POOL_SIZE = 10  # the service's default pool


async def append(request: web.Request) -> web.Response:
    body = await request.read()
    async with request.app["pool"].acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        position = await connection.fetchval(
            "INSERT INTO bare_log (data) VALUES ($1) RETURNING position", body
        )
    return web.json_response({"position": position}, status=201)


async def app(database_url: str) -> web.Application:
    application = web.Application()
    setup = await asyncpg.connect(database_url)
    await setup.execute("CREATE TABLE IF NOT EXISTS bare_log (position bigserial PRIMARY KEY, data bytea)")
    await setup.close()
    application["pool"] = await asyncpg.create_pool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    application.router.add_post("/append", append)
    return application


if __name__ == "__main__":
    web.run_app(app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
