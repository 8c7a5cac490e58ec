"""The projector: one per database, it tails the log into the usage projections.

Every service process runs one; an advisory lock elects the leader, and when the leader's session
ends (crash, kill -9, restart) another process takes over within a second. Followers only wait.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from projections.usage import project_batch

PROJECTOR_LOCK = 0x6B65796C65646703
log = logging.getLogger(__name__)


class Projector:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        wake_channel: str,
        batch_size: int = 50_000,
        idle_poll: float = 0.5,
    ):
        self._connect, self._channel = connect, wake_channel
        self._batch_size, self._idle_poll = batch_size, idle_poll
        self.is_leader = False

    async def run(self) -> None:
        """Lead or wait to lead, forever; reconnects after any database failure."""
        while True:
            try:
                connection = await self._connect()
                try:
                    await self._lead(connection)
                finally:
                    self.is_leader = False
                    await connection.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("projector lost its database connection (%s); retrying", type(error).__name__)
                await asyncio.sleep(1)

    async def _lead(self, connection: asyncpg.Connection) -> None:
        # Polling a database lock: there is no local event to wait on.
        while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PROJECTOR_LOCK):  # noqa: ASYNC110
            await asyncio.sleep(1)
        self.is_leader = True
        log.info("this process now runs the projector")
        wake = asyncio.Event()
        await connection.add_listener(self._channel, lambda *_: wake.set())
        while True:
            wake.clear()
            async with connection.transaction():
                read = await project_batch(connection, self._batch_size)
            if read < self._batch_size:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_poll):
                        await wake.wait()
