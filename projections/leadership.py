"""One loop per database: every process offers to run it, and the one that holds its advisory lock
does (PROJECTOR_LOCK for the projector, TREE_LOCK for the Merkle tree's writer). When the leader's
session ends (crash, kill -9, restart), another process takes the lock within a second. The loop
runs a step, then waits as long as the step asks, cut short by a NOTIFY on any of its channels."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

log = logging.getLogger(__name__)

# A step does one unit of work (in its own transaction) and answers how many seconds to wait before
# the next: 0 when there is more to do at once.
Step = Callable[[asyncpg.Connection], Awaitable[float]]


class Leadership:
    def __init__(self, lock: int, channels: Sequence[str]):
        self._lock, self._channels = lock, channels
        self.is_leader = False

    async def lead(
        self, connection: asyncpg.Connection, begin: Callable[[asyncpg.Connection], Awaitable[Step]]
    ) -> None:
        """Wait for the lock on this dedicated connection, then run the step `begin` gives (once
        leading) until the connection fails; the shell reconnects it."""
        try:
            # Polling a database lock: there is no local event to wait on.
            while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", self._lock):  # noqa: ASYNC110
                await asyncio.sleep(1)
            self.is_leader = True
            wake = asyncio.Event()
            for channel in self._channels:
                await connection.add_listener(channel, lambda *_: wake.set())
            step = await begin(connection)
            while True:
                wake.clear()
                pause = await step(connection)
                if pause > 0:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await wake.wait()
        finally:
            self.is_leader = False
