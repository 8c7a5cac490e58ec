"""The usage projector: exact totals through crashes, concurrent writers and leader changes.

These tests work on the database directly, without an app, so that nothing else projects: each
test decides when a batch is projected, committed, or crashed before its commit. The oracle is
always a recount over the events table itself.
"""

import asyncio
import contextlib
import functools
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from events.log import PROJECTOR_LOCK, USAGE_CHANNEL
from events.model import ApiKeyRevoked, UsageRecorded
from projections import usage as usage_projection
from projections.projector import Projector
from projections.usage import project_batch
from service.store import db, eventstore
from tests.helpers import utc, wait_until

ACCOUNTS = {f"key_{n}": f"acct_{n % 2}" for n in range(5)}  # five keys of two accounts
# Offsets around the world, so that local midnight and UTC midnight differ.
ZONES = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(hours=14)),
]


class Crash(Exception):
    """The projector dies after its batch's writes, before their commit."""


# Writing the log


def usage_events(rng: random.Random, count: int, prefix: str) -> list[UsageRecorded]:
    """Usage of the five keys over three days, in several time zones, with costs of 0 to 9 places."""
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    events = []
    for n in range(count):
        moment = base + timedelta(minutes=rng.randrange(3 * 24 * 60), milliseconds=rng.randrange(60_000))
        places = rng.randrange(10)
        cost = Decimal(rng.randrange(10**6)).scaleb(-places)
        events.append(
            UsageRecorded(
                request_id=f"{prefix}-{n}",
                key_id=rng.choice(list(ACCOUNTS)),
                occurred_at=moment.astimezone(rng.choice(ZONES)),
                cost_chf=f"{cost:.9f}",
                units=rng.randrange(1000),
                endpoint="/v1/chat/completions",
                model="m",
            )
        )
    return events


async def append_usage(connection: asyncpg.Connection, events: list[UsageRecorded], hold: float = 0) -> int:
    """Append as the usage endpoint does; `hold` keeps the transaction open before its commit."""
    async with connection.transaction():
        accepted = await eventstore.append_usage(
            connection, [(ACCOUNTS[event.key_id], event) for event in events], {"actor": "test"}
        )
        if hold:
            await asyncio.sleep(hold)
    return accepted


async def append_lifecycle(connection: asyncpg.Connection, stream: str, version: int) -> None:
    """A lifecycle event between the usage: the projector must step over it."""
    async with connection.transaction():
        await eventstore.append(
            connection,
            stream,
            "acct_0",
            version,
            [ApiKeyRevoked(key_id=f"key_lifecycle_{version}", revoked_at=datetime.now(UTC))],
            {"actor": "test"},
        )


@pytest.fixture
async def connection(database_url) -> asyncpg.Connection:
    """A connection as the service role, as the projector has."""
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


async def fill_log(connection: asyncpg.Connection, seed: int = 1) -> int:
    """Six appends of 50 usage events with lifecycle events in between; the number of events."""
    rng = random.Random(seed)
    for n in range(6):
        await append_usage(connection, usage_events(rng, 50, f"fill-{n}"))
        await append_lifecycle(connection, "account-acct_0", n)
    return 6 * 51


# Projecting


async def project(connection: asyncpg.Connection, limit: int, crash: bool = False) -> int:
    async with connection.transaction():
        read = await project_batch(connection, limit)
        if crash:
            raise Crash
    return read


async def catch_up(connection: asyncpg.Connection, limit: int = 50_000) -> int:
    """Project until a batch reads nothing; the number of events read."""
    total = 0
    while read := await project(connection, limit):
        total += read
    return total


# The oracle: a recount over the log, and what the projections say

Totals = dict[str, tuple[str, int, Decimal, datetime]]  # key -> account, requests, CHF, last use
Daily = dict[tuple[str, str], tuple[int, Decimal]]  # (key, UTC day) -> requests, CHF


async def recount(admin: asyncpg.Connection, up_to: int | None = None) -> tuple[Totals, Daily]:
    """Totals in SQL over the events table; daily buckets computed here from each event's instant."""
    up_to = up_to if up_to is not None else 2**62
    totals = {
        row["key_id"]: (row["account_id"], row["requests"], row["cost"], row["last_used"])
        for row in await admin.fetch(
            """SELECT data->>'key_id' AS key_id, min(account_id) AS account_id, count(*) AS requests,
                      sum((data->>'cost_chf')::numeric) AS cost,
                      max((data->>'occurred_at')::timestamptz) AS last_used
               FROM event_log WHERE type = 'UsageRecorded' AND position <= $1
               GROUP BY data->>'key_id'""",
            up_to,
        )
    }
    daily: dict[tuple[str, str], tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for row in await admin.fetch(
        """SELECT data->>'key_id' AS key_id, data->>'occurred_at' AS occurred_at, data->>'cost_chf' AS cost
           FROM event_log WHERE type = 'UsageRecorded' AND position <= $1""",
        up_to,
    ):
        bucket = (row["key_id"], utc(row["occurred_at"]).date().isoformat())
        requests, cost = daily[bucket]
        daily[bucket] = (requests + 1, cost + Decimal(row["cost"]))
    return totals, dict(daily)


async def projected(admin: asyncpg.Connection) -> tuple[Totals, Daily]:
    totals = {
        row["key_id"]: (row["account_id"], row["requests"], row["cost_chf"], row["last_used_at"])
        for row in await admin.fetch("SELECT * FROM key_usage_totals")
    }
    daily = {
        (row["key_id"], row["day"].isoformat()): (row["requests"], row["cost_chf"])
        for row in await admin.fetch("SELECT * FROM key_usage_daily")
    }
    return totals, daily


async def checkpoint(admin: asyncpg.Connection) -> int:
    return await usage_projection.checkpoint(admin)


async def assert_projection_is_the_recount(admin: asyncpg.Connection, up_to: int | None = None) -> None:
    expected_totals, expected_daily = await recount(admin, up_to)
    totals, daily = await projected(admin)
    assert totals == expected_totals
    assert daily == expected_daily
    assert sum(requests for _, requests, _, _ in totals.values()) == sum(
        requests for requests, _ in daily.values()
    )


async def position_after(admin: asyncpg.Connection, events: int) -> int:
    """The position of the `events`-th event of the log (0: none)."""
    if events == 0:
        return 0
    return await admin.fetchval("SELECT position FROM events ORDER BY position OFFSET $1 - 1 LIMIT 1", events)


# A crash between a batch's writes and its commit


async def kill_session(admin: asyncpg.Connection, connection: asyncpg.Connection) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", connection.get_server_pid())


CRASHES = {
    # name: (committed batches before the crash, how the projector dies)
    "first batch, exception": (0, "exception"),
    "third batch, exception": (2, "exception"),
    "last batch, exception": (4, "exception"),
    "third batch, session killed": (2, "killed"),
}


@pytest.mark.parametrize(("committed", "how"), CRASHES.values(), ids=CRASHES.keys())
async def test_a_crash_before_the_commit_neither_skips_nor_double_counts(
    database_url, admin, connection, committed, how
):
    size = 70
    total = await fill_log(connection)
    assert total > 4 * size, "the last batch must be a partial one"
    for _ in range(committed):
        assert await project(connection, size) == size

    if how == "exception":
        with pytest.raises(Crash):
            async with connection.transaction():
                assert await project_batch(connection, size) > 0
                raise Crash
    else:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            async with connection.transaction():
                assert await project_batch(connection, size) > 0
                await kill_session(admin, connection)
                await asyncio.sleep(0.1)  # let the termination arrive before the commit is tried
        connection = await db.connect(database_url)

    try:
        # Nothing of the crashed batch is visible: checkpoint and projections are as before it.
        done = await position_after(admin, committed * size)
        assert await checkpoint(admin) == done
        await assert_projection_is_the_recount(admin, up_to=done)

        assert await catch_up(connection, size) == total - committed * size
        assert await checkpoint(admin) == await admin.fetchval("SELECT max(position) FROM events")
        await assert_projection_is_the_recount(admin)
        assert await catch_up(connection, size) == 0
        await assert_projection_is_the_recount(admin)
    finally:
        if how == "killed":
            await connection.close()


async def test_a_projection_from_scratch_matches_the_recount_at_every_batch_size(admin, connection):
    await fill_log(connection)
    await catch_up(connection, 1)
    await assert_projection_is_the_recount(admin)


# Concurrent writers and a crashing projector


WRITERS, APPENDS, APPEND_SIZE = 4, 30, 40


async def writer(database_url: str, number: int, seed: int) -> int:
    """Appends on its own connection, sometimes holding its commit, sometimes retrying a batch."""
    rng = random.Random(seed)
    connection = await db.connect(database_url)
    try:
        accepted, sent = 0, []
        for n in range(APPENDS):
            events = usage_events(rng, APPEND_SIZE, f"w{number}-{n}")
            if sent and rng.random() < 0.2:  # a gateway retry: half of it was stored before
                events = rng.choice(sent)[: APPEND_SIZE // 2] + events[APPEND_SIZE // 2 :]
            accepted += await append_usage(connection, events, hold=rng.choice([0, 0, 0.002]))
            sent.append(events)
            await asyncio.sleep(rng.choice([0, 0.001]))
        return accepted
    finally:
        await connection.close()


async def crashing_projector(
    database_url: str, rng: random.Random, writing: Callable[[], bool], counts: dict[str, int]
) -> None:
    """Projects batches of random sizes while the writers write; about a third crash uncommitted."""
    connection = await db.connect(database_url)
    try:
        while writing():
            crash = rng.random() < 0.35
            try:
                read = await project(connection, rng.choice([1, 13, 50, 200]), crash)
                counts["committed"] += bool(read)
            except Crash:
                counts["crashed"] += 1
            await asyncio.sleep(rng.choice([0, 0.001, 0.005]))
    finally:
        await connection.close()


@pytest.mark.parametrize("projectors", [1, 2], ids=["one projector", "two projectors racing"])
async def test_concurrent_writers_and_crashing_projectors_end_exact(
    database_url, admin, connection, projectors
):
    """Two projectors racing is not how the service runs (it elects one), yet even then the
    checkpoint row lock keeps every event counted once."""
    writers = asyncio.gather(*(writer(database_url, number, seed=number) for number in range(WRITERS)))
    counts = {"committed": 0, "crashed": 0}
    await asyncio.gather(
        writers,
        *(
            crashing_projector(database_url, random.Random(100 + n), lambda: not writers.done(), counts)
            for n in range(projectors)
        ),
    )
    accepted = sum(writers.result())
    assert counts["committed"] > 5 and counts["crashed"] > 5, counts

    await catch_up(connection)
    usage_in_log = await admin.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'")
    assert usage_in_log == accepted
    assert accepted < WRITERS * APPENDS * APPEND_SIZE, "the writers were meant to retry some requests"
    assert await checkpoint(admin) == await admin.fetchval("SELECT max(position) FROM events")
    await assert_projection_is_the_recount(admin)
    totals, _ = await projected(admin)
    assert sum(requests for _, requests, _, _ in totals.values()) == accepted


# Leader election


@contextlib.contextmanager
def running(connect, projectors: list[Projector]) -> Iterator[list[asyncio.Task]]:
    tasks = [
        asyncio.create_task(db.keep_connected(connect, projector.lead, "projector", pause=1))
        for projector in projectors
    ]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def leaders(projectors: list[Projector]) -> list[int]:
    return [n for n, projector in enumerate(projectors) if projector.is_leader]


async def lock_holders(admin: asyncpg.Connection) -> list[int]:
    """Backends holding the projector's advisory lock (a bigint key: classid high, objid low word)."""
    rows = await admin.fetch(
        """SELECT pid FROM pg_locks
           WHERE locktype = 'advisory' AND granted AND objsubid = 1
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND classid::bigint = $1 AND objid::bigint = $2""",
        PROJECTOR_LOCK >> 32,
        PROJECTOR_LOCK & 0xFFFFFFFF,
    )
    return [row["pid"] for row in rows]


async def wait_for_projection(admin: asyncpg.Connection, requests: int, within: float) -> float:
    async def done() -> bool:
        return await admin.fetchval("SELECT coalesce(sum(requests), 0) FROM key_usage_totals") == requests

    return await wait_until(done, within)


@pytest.mark.parametrize("failure", ["task cancelled", "session killed"])
async def test_when_the_leader_goes_another_projector_takes_over(database_url, admin, connection, failure):
    connect = functools.partial(db.connect, database_url)
    projectors = [Projector(USAGE_CHANNEL) for _ in range(2)]
    rng = random.Random(7)
    with running(connect, projectors) as tasks:
        await wait_until(lambda: len(leaders(projectors)) == 1, within=5)
        # Exactly one leads, and keeps leading while the other polls for the lock.
        deadline = time.monotonic() + 1.5
        [leader] = leaders(projectors)
        while time.monotonic() < deadline:
            assert leaders(projectors) == [leader]
            await asyncio.sleep(0.05)
        assert len(await lock_holders(admin)) == 1

        first = await append_usage(connection, usage_events(rng, 100, "before"))
        await wait_for_projection(admin, first, within=2)

        [holder] = await lock_holders(admin)
        if failure == "task cancelled":
            await stop(tasks[leader])
        else:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", holder)
        took_over = await wait_until(
            lambda: len(leaders(projectors)) == 1 and lock_holders_changed(admin, holder), within=5
        )
        assert took_over < 2.0, f"no projector led for {took_over:.2f} s"
        if failure == "task cancelled":
            assert leaders(projectors) == [1 - leader]

        second = await append_usage(connection, usage_events(rng, 100, "after"))
        await wait_for_projection(admin, first + second, within=2)
        await assert_projection_is_the_recount(admin)
        assert await checkpoint(admin) == await admin.fetchval("SELECT max(position) FROM events")
        for task in tasks:
            await stop(task)
    assert leaders(projectors) == []


async def lock_holders_changed(admin: asyncpg.Connection, old: int) -> bool:
    holders = await lock_holders(admin)
    return len(holders) == 1 and holders != [old]
