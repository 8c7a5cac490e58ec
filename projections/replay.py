"""Replay: rebuild every projection from the log in the shadow schema, compare it row by row with the
live tables, and on request put the rebuilt rows in their place.

The replay's connection has `search_path = keyledger_replay, public`: the very code that keeps the live
projections writes the shadow ones, while `events` still means the one log. Lifecycle events (few)
go through `projections.accounts.apply` in position order; usage through the set-based
`projections.usage.project_batch`. The two families touch different tables, so each only has to be
applied in its own position order.

The live tables move on while the replay runs, so both sides are compared at one consistent point:
the lifecycle projections are written in the append's own transaction, so they stand at the log's
last committed position H; the usage projections stand at their checkpoint C, moved in the same
transaction as their rows. The shadow is brought to exactly H (lifecycle) and C (usage), then:

- compare only: all of that in one REPEATABLE READ snapshot, which fixes H, C and the live rows at
  once. Nobody waits: appends and the live projector go on.
- `swap`: under locks instead, since live rows are rewritten: APPEND_LOCK (no append commits) and the
  live checkpoint row FOR UPDATE (the projector waits). The checkpoint C stays true for the new rows.

Most of the work happens before, in committed batches up to where the live projector stands, so the
snapshot or the locks cover only what was appended meanwhile.
"""

import typing
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from events.log import APPEND_LOCK, REPLAY_LOCK, RESET_CHANNEL, StoredEvent
from events.model import AccountEvent
from projections import accounts, shadow, usage
from projections.shadow import TableDifference

ACCOUNTS_CHECKPOINT = "accounts"  # the shadow's lifecycle position, beside project_batch's "usage"
LIFECYCLE_TYPES = [event.__name__ for event in typing.get_args(AccountEvent)]
LIFECYCLE_PAGE = 2_000
USAGE_BATCH = 250_000  # each batch upserts every (key, day) it touches once: fewer, bigger batches

Progress = Callable[[int, int], None]  # (events replayed, events in the log)

_LIFECYCLE_EVENTS = """
    SELECT position, stream_id, version, account_id, type,
           convert_to(data::text, 'UTF8') AS data, convert_to(coalesce(metadata, '{}')::text, 'UTF8') AS metadata, recorded_at
    FROM public.events
    WHERE position > $1 AND position <= $2 AND type = ANY ($3::text[])
    ORDER BY position LIMIT $4"""
_LIVE_USAGE_POSITION = """
    SELECT coalesce((SELECT position FROM public.projector_checkpoints WHERE projector = $1), 0)"""
_LIVE_POSITIONS = f"""
    SELECT (SELECT coalesce(max(position), 0) FROM public.events), ({_LIVE_USAGE_POSITION})"""


class ReplayError(Exception):
    """The replay cannot run, or cannot give a sound answer; the message says what to do."""


@dataclass(frozen=True)
class Outcome:
    position: int  # the log position the lifecycle projections were compared at
    usage_position: int  # the position the usage projections were compared at: the live checkpoint
    differences: list[TableDifference]  # empty when the live projections are what the log gives
    swapped: bool  # the differing live tables now hold the replayed rows


async def replay(database_url: str, swap: bool = False, progress: Progress | None = None) -> Outcome:
    """Rebuild, compare and (with `swap`) replace; connects as the database owner."""
    connection = await asyncpg.connect(
        database_url, server_settings={"search_path": f"{shadow.SHADOW}, public"}
    )
    try:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", REPLAY_LOCK):
            raise ReplayError("Another replay of this database is running; wait until it has finished.")
        await shadow.create(connection, [usage.PROJECTOR, ACCOUNTS_CHECKPOINT])
        rebuild = _Rebuild(connection, progress or (lambda done, total: None))
        await rebuild.start()
        await _follow_the_live_projector(connection, rebuild)
        return await (_swap if swap else _compare)(connection, rebuild)
    finally:
        await connection.close()  # also releases REPLAY_LOCK


class _Rebuild:
    """The shadow projections, moved forward batch by batch; each step commits (or, inside the final
    transaction, is a savepoint) together with the shadow checkpoint it reached."""

    def __init__(self, connection: asyncpg.Connection, progress: Progress):
        self._connection, self._progress = connection, progress
        self._replayed = self._total = 0

    async def start(self) -> None:
        self._total = await self._connection.fetchval("SELECT count(*) FROM public.events")
        self._progress(0, self._total)

    async def catch_up(self, lifecycle_to: int, usage_to: int) -> int:
        """Bring the shadow to these positions; returns how many events the usage batches read."""
        read_here = 0
        while True:
            async with self._connection.transaction():
                read = await usage.project_batch(self._connection, USAGE_BATCH, up_to=usage_to)
            if not read:
                break
            read_here += read
            await self._apply_lifecycle(min(lifecycle_to, await usage.checkpoint(self._connection)))
            self._replayed += read
            self._total = max(self._total, self._replayed)
            self._progress(self._replayed, self._total)
        await self._apply_lifecycle(lifecycle_to)
        return read_here

    async def finish(self, lifecycle_to: int, usage_to: int) -> None:
        await self.catch_up(lifecycle_to, usage_to)
        reached = await usage.checkpoint(self._connection)
        if reached != usage_to:
            raise ReplayError(
                f"The live usage checkpoint went back to position {usage_to} while the replay had "
                f"reached {reached}: was the live projector reset? Run the replay again."
            )
        self._progress(self._total, self._total)

    async def _apply_lifecycle(self, up_to: int) -> None:
        while True:
            async with self._connection.transaction():
                after = await self._connection.fetchval(
                    "SELECT position FROM projector_checkpoints WHERE projector = $1", ACCOUNTS_CHECKPOINT
                )
                if after >= up_to:
                    return
                rows = await self._connection.fetch(
                    _LIFECYCLE_EVENTS, after, up_to, LIFECYCLE_TYPES, LIFECYCLE_PAGE
                )
                await accounts.apply(self._connection, [StoredEvent(**row) for row in rows])
                reached = rows[-1]["position"] if len(rows) == LIFECYCLE_PAGE else up_to
                await self._connection.execute(
                    "UPDATE projector_checkpoints SET position = $2 WHERE projector = $1",
                    ACCOUNTS_CHECKPOINT,
                    reached,
                )


async def _follow_the_live_projector(connection: asyncpg.Connection, rebuild: _Rebuild) -> None:
    """The bulk of the work, outside any snapshot or lock: up to where the live usage projector stands
    (never past it: the comparison happens there), again until it moves less than a batch meanwhile."""
    while True:
        position = await connection.fetchval(_LIVE_USAGE_POSITION, usage.PROJECTOR)
        if await rebuild.catch_up(position, position) < USAGE_BATCH:
            return


async def _compare(connection: asyncpg.Connection, rebuild: _Rebuild) -> Outcome:
    async with connection.transaction(isolation="repeatable_read"):
        position, usage_position = await connection.fetchrow(_LIVE_POSITIONS, usage.PROJECTOR)
        await rebuild.finish(position, usage_position)
        return Outcome(position, usage_position, await shadow.differences(connection), swapped=False)


async def _swap(connection: asyncpg.Connection, rebuild: _Rebuild) -> Outcome:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
        # The row must exist to be locked: else a first projector batch could commit under our feet.
        await connection.execute(
            """INSERT INTO public.projector_checkpoints (projector, position) VALUES ($1, 0)
               ON CONFLICT DO NOTHING""",
            usage.PROJECTOR,
        )
        await connection.execute(
            "SELECT FROM public.projector_checkpoints WHERE projector = $1 FOR UPDATE", usage.PROJECTOR
        )
        position, usage_position = await connection.fetchrow(_LIVE_POSITIONS, usage.PROJECTOR)
        await rebuild.finish(position, usage_position)
        differences = await shadow.differences(connection)
        for difference in differences:
            await shadow.replace(connection, difference.table)
        if {"api_keys", "subscriptions"} & {difference.table for difference in differences}:
            await connection.execute("SELECT pg_notify($1, '')", RESET_CHANNEL)  # delivered on commit
        return Outcome(position, usage_position, differences, swapped=True)
