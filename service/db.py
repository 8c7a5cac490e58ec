"""Connections: one asyncpg pool per process, every connection running as the service role."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

SERVICE_ROLE = "keyledger_app"


def _jsonb_as_bytes(connection: asyncpg.Connection):
    # jsonb travels as raw JSON bytes so msgspec decodes straight into typed structs.
    return connection.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda value: b"\x01" + value,
        decoder=lambda value: value[1:],
        format="binary",
    )


async def _init_connection(connection: asyncpg.Connection) -> None:
    await _jsonb_as_bytes(connection)
    # The service may append to and read the log, never change it: the role enforces it.
    await connection.execute(f"SET ROLE {SERVICE_ROLE}")


async def create_pool(database_url: str, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        database_url, min_size=1, max_size=max_size, init=_init_connection, command_timeout=30
    )


async def connect(database_url: str) -> asyncpg.Connection:
    """A single connection as the service role (for listeners and tools)."""
    connection = await asyncpg.connect(database_url)
    await _init_connection(connection)
    return connection


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def keep_connected(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    work: Callable[[asyncpg.Connection], Awaitable[None]],
    name: str,
    pause: float,
) -> None:
    """Run `work` on a dedicated connection, forever: after the connection fails, wait `pause`
    seconds and run it again on a new one. For listeners and leaders, which must not share a pool."""
    while True:
        try:
            connection = await connect()
            try:
                await work(connection)
            finally:
                # terminate, not close: a cancellation may have interrupted a query, and close()
                # would then fail with "another operation is in progress" instead of ending.
                connection.terminate()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("%s lost its database connection (%s); reconnecting", name, type(error).__name__)
            await asyncio.sleep(pause)
