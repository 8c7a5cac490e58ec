"""The projector: one per database, it tails the log into the usage projections.

Every service process runs one; an advisory lock elects the leader, and when the leader's session
ends (crash, kill -9, restart) another process takes over within a second. Followers only wait.
"""

import asyncio
import contextlib
import logging

import asyncpg

from events.log import PROJECTED_CHANNEL, PROJECTOR_LOCK
from projections.usage import project_batch

log = logging.getLogger(__name__)


class Projector:
    """Runs on one dedicated connection (the shell reconnects it): waits for the leader lock, then
    projects until the connection fails."""

    def __init__(self, wake_channel: str, batch_size: int = 50_000, idle_poll: float = 0.5):
        self._channel, self._batch_size, self._idle_poll = wake_channel, batch_size, idle_poll
        self.is_leader = False

    async def lead(self, connection: asyncpg.Connection) -> None:
        try:
            # Polling a database lock: there is no local event to wait on.
            while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PROJECTOR_LOCK):  # noqa: ASYNC110
                await asyncio.sleep(1)
            self.is_leader = True
            log.info("this process now runs the projector")
            await self._project(connection)
        finally:
            self.is_leader = False

    async def _project(self, connection: asyncpg.Connection) -> None:
        wake = asyncio.Event()
        await connection.add_listener(self._channel, lambda *_: wake.set())
        while True:
            wake.clear()
            async with connection.transaction():
                read = await project_batch(connection, self._batch_size)
                if read:  # delivered on commit: the key caches re-read the monthly spend it moved
                    await connection.execute("SELECT pg_notify($1, '')", PROJECTED_CHANNEL)
            if read < self._batch_size:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_poll):
                        await wake.wait()
