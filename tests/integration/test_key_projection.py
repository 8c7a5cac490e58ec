"""The key projection, `api_keys`.

Its fold exists twice: in SQL (`projections.accounts.apply`, written in the append's transaction and
by a replay) and in memory (`projections.key_rows`, which time travel folds the log with). Random
command sequences, appended as `service.app.commands` appends them, must leave the same rows in both.
"""

import itertools
import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from events import apikey
from events.account import (
    Account,
    CreateKey,
    RevokeKey,
    RotateKey,
    SetSubscription,
    UpdateKey,
    decide,
    evolve,
)
from events.errors import DomainError
from events.log import account_stream
from projections import accounts
from projections.key_rows import KeyRow, key_rows
from service.store import db, eventstore, migrations

# Every example writes a new account with key ids of its own: the database is shared by the examples.
_accounts = itertools.count()
KEY_COLUMNS = list(KeyRow.__annotations__)

key_numbers = st.integers(0, 7)
names = st.sampled_from(["prod", "dev", "", "  spaced  ", "Zürich 🚀", "x" * 101])
last_fours = st.text(alphabet=apikey.ALPHABET, min_size=4, max_size=4)
# Expiries as offsets from the moment of the command (a past one is refused, as it should be).
expiries = st.sampled_from([None, timedelta(hours=1), timedelta(days=2), -timedelta(hours=1)])
limits = st.sampled_from([None, "25", "0.000000001", "1e3"])
command_shapes = st.one_of(
    st.tuples(st.just(CreateKey), key_numbers, names, last_fours, expiries, limits),
    st.tuples(
        st.just(UpdateKey),
        key_numbers,
        st.just(UNSET) | names,
        st.just(UNSET) | expiries,
        st.just(UNSET) | limits,
    ),
    st.tuples(st.just(RotateKey), key_numbers, key_numbers, last_fours, st.sampled_from([0, 3600, 86400])),
    st.tuples(st.just(RevokeKey), key_numbers, st.sampled_from(["user", "leaked"])),
    st.tuples(st.just(SetSubscription), st.booleans(), st.sampled_from(["pro", "team"])),
)
steps = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3))


@pytest.fixture
async def connection(database_url):
    """A connection as the service opens them (jsonb passed as bytes, as the event store writes it)."""
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


def command_of(account_id: str, shape: tuple, now: datetime):
    kind, *arguments = shape
    if kind is SetSubscription:
        return SetSubscription(*arguments)
    key_id = f"key_{account_id}x{arguments[0]}"

    def moment(offset):
        return offset if offset in (None, UNSET) else now + offset

    if kind is CreateKey:
        name, last4, expiry, limit = arguments[1:]
        return CreateKey(key_id, name, apikey.digest(f"{key_id}-secret"), last4, moment(expiry), limit)
    if kind is UpdateKey:
        name, expiry, limit = arguments[1:]
        return UpdateKey(key_id, name, moment(expiry), limit)
    if kind is RotateKey:
        new_key_id, last4, grace = f"key_{account_id}x{arguments[1]}", *arguments[2:]
        return RotateKey(key_id, new_key_id, apikey.digest(f"{new_key_id}-secret"), last4, grace)
    return RevokeKey(key_id, reason=arguments[1])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(command_shapes, steps), max_size=30))
async def test_the_projected_rows_are_the_rows_folded_from_the_log(connection, sequence):
    account_id = f"acct{next(_accounts)}"
    stream = account_stream(account_id)
    state, events, clock = Account(), [], datetime(2026, 11, 1, tzinfo=UTC)
    for shape, step in sequence:
        clock += step
        try:
            new_events = decide(state, command_of(account_id, shape, clock), clock)
        except DomainError:
            continue
        if not new_events:
            continue
        async with connection.transaction():
            stored = await eventstore.append(
                connection, stream, account_id, state.version, new_events, {"actor": "test"}
            )
            await accounts.apply(connection, stored)
        for event in new_events:
            state = evolve(state, event)
        events += new_events

    projected = await accounts.list_keys(connection, account_id)

    assert [{column: row[column] for column in KEY_COLUMNS} for row in projected] == key_rows(events)


async def test_keys_projected_before_migrations_006_and_007_get_what_a_replay_would_give(
    server_url, tmp_path
):
    """Migration 006 fills masked_key in for the rows already there, in SQL, as apikey.masked does; 007
    gives keys revoked before it the reason "user", as their ApiKeyRevoked events do by default."""
    up_to_005 = tmp_path / "sql"
    up_to_005.mkdir()
    for migration in migrations.available():
        if migration.number <= 5:
            (up_to_005 / migration.name).write_text(migration.text, encoding="utf-8")
    name = f"keyledger_masked_{secrets.token_hex(4)}"
    server = await asyncpg.connect(server_url)
    await server.execute(f"CREATE DATABASE {name}")
    try:
        url = db.with_database(server_url, name)
        await migrations.migrate(url, up_to_005)
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                """INSERT INTO api_keys (key_id, account_id, name, key_digest, last4, status, created_at,
                                         created_position, updated_position)
                   VALUES ('key_old', 'acct_old', 'old', $1, '9fQz', 'active', now(), 1, 1),
                          ('key_gone', 'acct_old', 'gone', $2, 'Gone', 'revoked', now(), 2, 3)""",
                bytes(32),
                bytes(31) + b"\x01",
            )
            assert await migrations.migrate(url) == [
                "006_masked_key.sql",
                "007_key_lifecycle.sql",
                "009_merkle_tree.sql",
            ]
            masked = await connection.fetchval(
                "SELECT masked_key FROM analytics.keys WHERE key_id = 'key_old'"
            )
            reasons = dict(await connection.fetch("SELECT key_id, revoked_reason FROM api_keys"))
        finally:
            await connection.close()
    finally:
        await server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await server.close()
    assert masked == apikey.masked("9fQz")
    assert reasons == {"key_old": None, "key_gone": "user"}
