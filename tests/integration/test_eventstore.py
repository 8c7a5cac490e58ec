"""The event store contract: optimistic appends, an immutable log, and a gap-free reader."""

import asyncio
import random

import asyncpg
import pytest

from events.model import ApiKeyRevoked
from service.store import db, eventstore
from tests.unit.test_account_decider import NOW


def revoked(n: int) -> ApiKeyRevoked:
    return ApiKeyRevoked(key_id=f"key_{n}", revoked_at=NOW)


async def append(connection, stream_id: str, expected_version: int, *new_events):
    async with connection.transaction():
        return await eventstore.append(
            connection, stream_id, "acct", expected_version, list(new_events), {"actor": "test"}
        )


@pytest.fixture
async def service_connection(database_url):
    """A connection as the service role, exactly as the running service has."""
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


async def test_append_assigns_versions_and_positions(service_connection):
    stored = await append(service_connection, "s", 0, revoked(1), revoked(2))
    assert [event.version for event in stored] == [1, 2]
    assert stored[0].position < stored[1].position
    more = await append(service_connection, "s", 2, revoked(3))
    assert more[0].version == 3
    assert [event.version for event in await eventstore.read_stream(service_connection, "s")] == [1, 2, 3]


@pytest.mark.parametrize("expected_version", [0, 2, 5])
async def test_a_wrong_expected_version_is_refused_and_appends_nothing(service_connection, expected_version):
    await append(service_connection, "s", 0, revoked(1))
    with pytest.raises(eventstore.WrongExpectedVersion):
        await append(service_connection, "s", expected_version, revoked(2))
    assert len(await eventstore.read_stream(service_connection, "s")) == 1


async def test_concurrent_appends_at_the_same_version_let_exactly_one_through(database_url):
    connections = [await db.connect(database_url) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(append(connection, "s", 0, revoked(n)) for n, connection in enumerate(connections)),
            return_exceptions=True,
        )
        assert sum(isinstance(result, list) for result in results) == 1
        assert sum(isinstance(result, eventstore.WrongExpectedVersion) for result in results) == 7
        assert len(await eventstore.read_stream(connections[0], "s")) == 1
    finally:
        for connection in connections:
            await connection.close()


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET type = 'Forged'", "DELETE FROM events", "TRUNCATE events"],
)
async def test_the_log_refuses_change_even_to_its_owner(service_connection, admin, statement):
    await append(service_connection, "s", 0, revoked(1))
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await admin.execute(statement)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await service_connection.execute(statement)
    assert await admin.fetchval("SELECT count(*) FROM events WHERE type = 'ApiKeyRevoked'") == 1


async def test_the_service_role_may_only_insert_and_select_on_the_log(service_connection):
    assert await service_connection.fetchval("SELECT current_user") == db.SERVICE_ROLE
    privileges = await service_connection.fetch(
        """SELECT privilege_type FROM information_schema.role_table_grants
           WHERE table_name = 'events' AND grantee = $1""",
        db.SERVICE_ROLE,
    )
    assert sorted(row["privilege_type"] for row in privileges) == ["INSERT", "SELECT"]


WRITERS, APPENDS_PER_WRITER = 8, 500


async def _writer(database_url: str, writer: int) -> None:
    connection = await db.connect(database_url)
    try:
        for version in range(APPENDS_PER_WRITER):
            async with connection.transaction():
                await eventstore.append(connection, f"w{writer}", "acct", version, [revoked(version)], {})
                if random.random() < 0.05:  # commit late, after others have taken later positions
                    await asyncio.sleep(0.001)
    finally:
        await connection.close()


async def test_a_tailing_reader_sees_every_event_once_in_position_order(database_url):
    total = WRITERS * APPENDS_PER_WRITER
    writers = asyncio.gather(*(_writer(database_url, writer) for writer in range(WRITERS)))
    reader = await db.connect(database_url)
    seen, last = [], 0
    try:
        while True:
            writers_finished = writers.done()  # read before the batch: a final empty read ends the loop
            batch = await eventstore.read_all(reader, after=last, limit=300)
            seen.extend(batch)
            last = batch[-1].position if batch else last
            if not batch and writers_finished:
                break
            if not batch:
                await asyncio.sleep(0.001)
        await writers
    finally:
        await reader.close()
    assert len(seen) == total, f"the reader skipped {total - len(seen)} events committed late"
    positions = [event.position for event in seen]
    assert positions == sorted(set(positions)), "positions repeat or go backwards"
    assert len({(event.stream_id, event.version) for event in seen}) == total
