"""Running a command against an account stream: load, decide, append with the expected version."""

import asyncio
import random
from datetime import UTC, datetime

import asyncpg

from events.account import Account, Command, decide, evolve, fold
from events.log import StoredEvent, account_stream
from events.model import account_event_decoder
from projections import accounts as accounts_projection
from service.app.errors import Contention
from service.store import db, eventstore

MAX_ATTEMPTS = 10


async def load_account(connection: asyncpg.Connection, account_id: str) -> Account:
    stored = await eventstore.read_stream(connection, account_stream(account_id))
    return fold([account_event_decoder.decode(event.data) for event in stored])


async def execute(
    pool: db.Pool, account_id: str, command: Command, metadata: dict
) -> tuple[Account, list[StoredEvent]]:
    """Decide and append; on a concurrent append to the same stream, decide again on the new state.

    The key projection is written in the append's transaction, so the caller's next read sees it.
    """
    stream_id = account_stream(account_id)
    for attempt in range(MAX_ATTEMPTS):
        async with pool.acquire() as connection:
            state = await load_account(connection, account_id)
            new_events = decide(state, command, datetime.now(UTC))
            if not new_events:
                return state, []
            try:
                async with connection.transaction():
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
