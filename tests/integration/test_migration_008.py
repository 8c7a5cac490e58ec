"""Migration 008 (usage as typed columns) on a log written by the schema and code before it: every event
reads back and exports byte for byte as before, the chain verifies, the log stays append-only."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import msgspec
import pytest

from events.model import ApiKeyCreated, ApiKeyRenamed, ApiKeyRevoked, SubscriptionActivated, UsageRecorded
from service.app import audit
from service.store import db, eventstore, migrations
from tests import before_008

NOW = datetime.now(UTC).replace(microsecond=123456)


def used(n: int, key_id: str, occurred_at: datetime, cost: str = "0.000150000") -> UsageRecorded:
    return UsageRecorded(
        request_id=f"req_{n}", key_id=key_id, occurred_at=occurred_at, cost_chf=cost, units=n * 7,
        endpoint="/v1/chat/completions", model="model-ä \"quoted\"",
    )  # fmt: skip


async def write_old_log(connection: asyncpg.Connection) -> None:
    created = ApiKeyCreated(
        key_id="key_a", name="first", key_digest="ab" * 32, last4="abcd", created_at=NOW,
        monthly_spend_limit_chf="10.000000000",
    )  # fmt: skip
    await before_008.append(connection, "acct_1", [("account-acct_1", 1, created)], {"actor": "user"})
    await before_008.append(
        connection,
        "acct_1",
        [before_008.usage(used(n, "key_a", NOW - timedelta(hours=n))) for n in range(1, 6)],
        {"actor": "gateway", "client": "10.0.0.1"},
    )
    await before_008.append(
        connection,
        "acct_1",
        [
            before_008.usage(used(6, "key_a", NOW.replace(microsecond=0))),  # no fraction of a second
            before_008.usage(used(7, "key_a", NOW.astimezone(timezone(timedelta(hours=2))))),  # an offset
            before_008.usage(used(8, "key_a", NOW, cost="123456789012345678.123456789")),
        ],
        {},
    )
    await before_008.append(
        connection,
        "acct_1",
        [
            ("account-acct_1", 2, ApiKeyRenamed(key_id="key_a", name="second", previous_name="first", renamed_at=NOW)),
            ("account-acct_1", 3, SubscriptionActivated(plan="pro", activated_at=NOW)),
            ("account-acct_1", 4, ApiKeyRevoked(key_id="key_a", revoked_at=NOW)),
        ],
        {"actor": "user", "request_id": "r1"},
    )  # fmt: skip


def old_migrations(folder: Path) -> Path:
    folder.mkdir()
    for entry in migrations.SQL.iterdir():
        if entry.name.endswith(".sql") and entry.name < "008":
            (folder / entry.name).write_text(entry.read_text(encoding="utf-8"))
    return folder


@pytest.fixture
async def migrated_log(empty_database_url, tmp_path):
    """A log written before 008 and its export then; after that, every migration applied."""
    before = old_migrations(tmp_path / "sql")
    await migrations.migrate(empty_database_url, before)
    admin = await asyncpg.connect(empty_database_url)
    try:
        await write_old_log(admin)
        lines = await before_008.export_lines(admin)
        stored = await admin.fetch("SELECT position, stream_id, data::text, metadata::text FROM events")
        applied = await migrations.migrate(empty_database_url)
        assert applied[0] == "008_typed_usage.sql"  # then any later ones
        yield empty_database_url, admin, lines, stored
    finally:
        await admin.close()


def without_leaf(record: dict) -> dict:
    return {field: value for field, value in record.items() if field != "leaf_index"}


async def test_every_event_exports_byte_for_byte_as_before_and_the_chain_verifies(migrated_log):
    url, _, lines, _ = migrated_log
    connection = await db.connect(url)
    try:
        # leaf_index came after 008 (the Merkle tree's leaf, not hashed); before_008 stays frozen.
        exported = [record async for record in audit.all_records(connection)]
        assert [msgspec.json.encode(without_leaf(record)) for record in exported] == lines
        verdict = await audit.verify_database(connection)
        assert verdict.broken is None and verdict.checked == len(lines) == 12
    finally:
        await connection.close()


async def test_usage_rows_are_typed_unless_their_json_would_not_come_back_exactly(migrated_log):
    _, admin, _, _ = migrated_log
    typed = await admin.fetch("SELECT idempotency_key FROM events WHERE key_id IS NOT NULL ORDER BY position")
    assert [row[0] for row in typed] == ["req_1", "req_2", "req_3", "req_4", "req_5", "req_6", "req_8"]
    kept = await admin.fetchrow(
        "SELECT data->>'occurred_at', stream_id FROM events WHERE idempotency_key = 'req_7'"
    )
    assert kept[0].endswith("+02:00") and kept[1] == "usage-key_a"
    assert await admin.fetchval("SELECT count(*) FROM events WHERE data IS NULL") == len(typed)


async def test_every_event_reads_back_as_it_was_stored(migrated_log):
    url, _, _, stored = migrated_log
    connection = await db.connect(url)
    try:
        read = await eventstore.read_all(connection, limit=100)
    finally:
        await connection.close()
    as_stored = {row[0]: (row[1], msgspec.json.decode(row[2]), msgspec.json.decode(row[3])) for row in stored}
    assert {
        event.position: (
            event.stream_id,
            msgspec.json.decode(event.data),
            msgspec.json.decode(event.metadata),
        )
        for event in read
    } == as_stored


async def test_the_chain_goes_on_and_the_log_stays_append_only(migrated_log):
    url, admin, lines, _ = migrated_log
    connection = await db.connect(url)
    try:
        async with connection.transaction():
            await eventstore.append_usage(
                connection, [("acct_1", used(n, "key_a", NOW)) for n in (8, 9, 10)], {"actor": "gateway"}
            )
        verdict = await audit.verify_database(connection)
        assert verdict.broken is None and verdict.checked == len(lines) + 2  # req_8 was known
    finally:
        await connection.close()
    for statement in ("UPDATE events SET type = 'Forged'", "DELETE FROM events", "TRUNCATE events"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await admin.execute(statement)
