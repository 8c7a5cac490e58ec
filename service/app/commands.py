"""Running a command against an account stream: load, decide, append with the expected version.

A command holds its account's lock from before it loads the state until it commits, so commands on
one account queue instead of deciding on the same state and retrying; commands on other accounts go
on. The state comes from the account projection, which the append's transaction writes, so it
stands exactly at the stream's version: no stream is read, whatever its length.
"""

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from events.account import Account, Command, CreateKey, RevokeKey, RotateKey, UpdateKey, decide, evolve
from events.log import ACCOUNT_LOCKS, StoredEvent, account_stream
from projections import accounts as accounts_projection
from service.app.errors import Contention
from service.store import db, eventstore

MAX_ATTEMPTS = 10


async def load_account(connection: asyncpg.Connection, account_id: str) -> Account:
    """The account's state as a command on none of its revoked keys sees it."""
    return await accounts_projection.account_state(connection, account_id, [])


def _named_keys(command: Command) -> list[str]:
    """The keys a command acts on, or whose id it claims, whatever their status."""
    match command:
        case CreateKey() | UpdateKey() | RevokeKey():
            return [command.key_id]
        case RotateKey():
            return [command.key_id, command.new_key_id]
    return []


def _account_lock(account_id: str) -> int:
    """The second key of the account's advisory lock: 32 bits of its id's hash (two accounts that
    share it only queue behind each other)."""
    return int.from_bytes(hashlib.blake2b(account_id.encode(), digest_size=4).digest(), "big", signed=True)


@contextlib.asynccontextmanager
async def _account_transaction(connection: asyncpg.Connection, account_id: str) -> AsyncIterator[None]:
    """A transaction holding the account's lock; BEGIN and the lock are one round trip (a simple query
    of two statements, whose only values are integers made here)."""
    try:
        await connection.execute(
            f"BEGIN; SELECT pg_advisory_xact_lock({ACCOUNT_LOCKS}, {_account_lock(account_id)})"
        )
        yield
    except BaseException:
        if connection.is_in_transaction() and not connection.is_closed():
            with contextlib.suppress(*db.DATABASE_UNAVAILABLE, asyncpg.PostgresError, TimeoutError):
                await connection.execute("ROLLBACK")
        raise
    await connection.execute("COMMIT")


async def execute(
    pool: db.Pool, account_id: str, command: Command, metadata: dict
) -> tuple[Account, list[StoredEvent]]:
    """Decide and append; the account's projection is written in the append's transaction, so the
    caller's next read sees it. Returns the state the command left and the events it stored.

    Under the account's lock the expected version holds unless a writer bypassed the lock (a tool, a
    test); then the command is decided again on the new state.
    """
    stream_id = account_stream(account_id)
    async with pool.acquire() as connection:
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with _account_transaction(connection, account_id):
                    state = await accounts_projection.account_state(
                        connection, account_id, _named_keys(command)
                    )
                    new_events = decide(state, command, datetime.now(UTC))
                    if not new_events:
                        return state, []
                    stored = await eventstore.append(
                        connection, stream_id, account_id, state.version, new_events, metadata
                    )
                    await accounts_projection.apply(connection, stored)
            except eventstore.WrongExpectedVersion:
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
                continue
            for event in new_events:
                state = evolve(state, event)
            return state, stored
    raise Contention("Too many changes to this account at the same moment; retry the request.")
