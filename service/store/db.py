"""Connections: one asyncpg pool per process, every connection running as the service role.

A database that hangs (a frozen server, a lost network path) sends no error: a request would wait
for it as long as its caller waits. So a pooled connection is held until DEADLINE seconds after the
acquire; if by then the database has answered nothing in this process for ALIVE_WITHIN seconds, the
connection is terminated, which ends whatever it waits for at once (PostgreSQL rolls back what it
had begun), and the block fails with DatabaseTimeout, which callers answer with 503. While the
database does answer (a lock wait behind other appends, a big batch on a busy machine), the work is
slow, not lost, and goes on; command_timeout still bounds every statement. In the service the key
cache's listener reads from the database every second, so that proof of life never pauses for long.

Inside `one_deadline()` (each HTTP request) all the connections acquired share the deadline of the
first, so a request touching the database several times still gets one DEADLINE in all.
"""

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service import metrics

log = logging.getLogger(__name__)

SERVICE_ROLE = "keyledger_app"
DEADLINE = 4.0  # seconds; the gateway is promised an answer, 503 at worst, within 5
ALIVE_WITHIN = 3.0  # seconds: a database that answered any query of this process since is alive


# Errors that mean "the database cannot be reached right now", not "the request is wrong".
DATABASE_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full, out of memory
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # the database does not accept connections
    asyncpg.exceptions.InvalidCatalogNameError,  # the database is gone
)


class DatabaseTimeout(TimeoutError):
    """The database did not finish within the deadline: it hangs, or it is overloaded."""


def _jsonb_as_bytes(connection: asyncpg.Connection):
    # jsonb travels as raw JSON bytes so msgspec decodes straight into typed structs.
    return connection.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda value: b"\x01" + value,
        decoder=lambda value: value[1:],
        format="binary",
    )


_last_answer = float("-inf")  # time.monotonic() when a query of this process last got an answer


def _heard_from_the_database(query: asyncpg.connection.LoggedQuery) -> None:
    global _last_answer
    if query.exception is None or isinstance(query.exception, asyncpg.PostgresError):
        _last_answer = time.monotonic()  # an error the server sent is an answer too


def _database_silent_for() -> float:
    return time.monotonic() - _last_answer


async def _init_connection(connection: asyncpg.Connection) -> None:
    connection.add_query_logger(_heard_from_the_database)
    await _jsonb_as_bytes(connection)
    # The service may append to and read the log, never change it: the role enforces it.
    await connection.execute(f"SET ROLE {SERVICE_ROLE}")


class _SharedDeadline:
    __slots__ = ("at",)

    def __init__(self):
        self.at: float | None = None  # loop.time() by which the work must be done; set by the first acquire


_shared_deadline: contextvars.ContextVar[_SharedDeadline | None] = contextvars.ContextVar(
    "keyledger_shared_deadline", default=None
)


class _OneDeadline:
    # A class, not @contextlib.contextmanager: every request enters one, and a generator costs
    # about a microsecond more on the hot path (routes/verify.py).
    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _shared_deadline.set(_SharedDeadline())

    def __exit__(self, *_) -> None:
        _shared_deadline.reset(self._token)


def one_deadline() -> _OneDeadline:
    """Every pooled connection acquired inside shares one deadline: DEADLINE seconds after the first
    acquire. (Each aiohttp request runs in a task of its own, so requests never share one.)"""
    return _OneDeadline()


def _deadline(now: float) -> float:
    shared = _shared_deadline.get()
    if shared is None:
        return now + DEADLINE
    if shared.at is None:
        shared.at = now + DEADLINE
    return shared.at


class _Lease:
    """`async with pool.acquire() as connection`, with the deadline (see the module's docstring)."""

    __slots__ = ("_connection", "_deadline", "_expired", "_pool", "_timer", "_wait")

    def __init__(self, pool: asyncpg.Pool, wait: float | None):
        self._pool, self._wait = pool, wait  # wait: the caller's own limit on waiting for a connection
        self._connection = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        self._deadline = _deadline(loop.time())
        remaining = self._deadline - loop.time()
        if self._wait is not None:
            remaining = min(remaining, self._wait)
        if remaining <= 0:
            raise DatabaseTimeout(f"the database did not answer within {DEADLINE} s")
        try:
            self._connection = await self._pool.acquire(timeout=remaining)
        except TimeoutError as error:  # every connection busy, or a new one not accepted
            raise DatabaseTimeout(f"no database connection within {DEADLINE} s") from error
        self._timer = loop.call_at(self._deadline, self._expire)
        return self._connection

    def _expire(self) -> None:
        silent_for = _database_silent_for()
        if silent_for < ALIVE_WITHIN:  # it answers others: this work is slow, not lost; look again later
            self._timer = asyncio.get_running_loop().call_later(ALIVE_WITHIN - silent_for, self._expire)
            return
        self._expired = True
        self._connection.terminate()

    async def __aexit__(self, exc_type, exc, traceback) -> None:
        self._timer.cancel()
        loop = asyncio.get_running_loop()
        try:
            # Bounded too: resetting a connection (or waiting for a cancelled query) needs the database.
            await self._pool.release(self._connection, timeout=max(self._deadline - loop.time(), 1.0))
        except Exception as error:  # the pool has terminated that connection; the work itself is over
            log.warning("a database connection could not be reset (%s); dropped it", type(error).__name__)
        if self._expired and exc is not None:
            raise DatabaseTimeout(f"the database did not answer within {DEADLINE} s") from exc


class Pool:
    """An asyncpg pool whose `acquire()` holds a connection until the deadline at most."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    def acquire(self, *, timeout: float | None = None) -> _Lease:
        return _Lease(self._pool, timeout)

    async def close(self) -> None:
        await self._pool.close()


async def _no_session_state_to_reset(connection: asyncpg.Connection) -> None:
    """A released connection needs no reset query. asyncpg rolls back an open transaction and drops
    listeners before calling this; its default would then send `pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` on every release, one more round trip per request. Pooled connections hold
    no session state to undo: the append lock is transaction-scoped, cursors live in transactions,
    and session locks, LISTEN and search_path belong to dedicated connections (`connect`, replay,
    migrations). SET ROLE in `_init_connection` is the one session setting, and it must stay."""


async def create_pool(database_url: str, max_size: int = 10) -> Pool:
    """The pool of a process. min_size 0: no background task keeps reconnecting (and logging) while
    the database is away; connections open on demand and stay open while used."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=0,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        reset=_no_session_state_to_reset,
        command_timeout=30,
        timeout=DEADLINE,  # to connect, also for connections no request waits for
    )
    return Pool(pool)


async def connect(database_url: str, name: str = "keyledger") -> asyncpg.Connection:
    """A single connection as the service role (for listeners and tools); `name` is its
    application_name, which pg_stat_activity shows an operator."""
    connection = await asyncpg.connect(database_url, server_settings={"application_name": name})
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
            metrics.RECONNECTS.labels(name).inc()
            await asyncio.sleep(pause)
