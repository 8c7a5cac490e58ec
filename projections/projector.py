"""The projector: one per database, it tails the log into the usage projections.

Every service process runs one; an advisory lock elects the leader, and when the leader's session
ends (crash, kill -9, restart) another process takes over within a second. Followers only wait.
"""

import logging

import asyncpg

from events.log import PROJECTED_CHANNEL, PROJECTOR_LOCK
from projections.leadership import Leadership, Step
from projections.usage import project_batch

log = logging.getLogger(__name__)


class Projector:
    """Runs on one dedicated connection (the shell reconnects it): waits for the leader lock, then
    projects until the connection fails."""

    def __init__(self, wake_channel: str, batch_size: int = 50_000, idle_poll: float = 0.5):
        self._batch_size, self._idle_poll = batch_size, idle_poll
        self._leadership = Leadership(PROJECTOR_LOCK, [wake_channel])

    @property
    def is_leader(self) -> bool:
        return self._leadership.is_leader

    async def lead(self, connection: asyncpg.Connection) -> None:
        await self._leadership.lead(connection, self._begin)

    async def _begin(self, connection: asyncpg.Connection) -> Step:
        log.info("this process now runs the projector")
        return self._project

    async def _project(self, connection: asyncpg.Connection) -> float:
        async with connection.transaction():
            read = await project_batch(connection, self._batch_size)
            if read:  # delivered on commit: the key caches re-read the monthly spend it moved
                await connection.execute("SELECT pg_notify($1, '')", PROJECTED_CHANNEL)
        return 0 if read == self._batch_size else self._idle_poll
