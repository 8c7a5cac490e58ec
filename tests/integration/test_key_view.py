"""The key view's one statement (`projections.key_view`) against the fold it replaced.

The view reads the key, its totals and its daily buckets in one statement and sums the 30-day window
and the month in SQL. `usage_block` (which time travel still uses) sums the same buckets in Python.
For any buckets around any day — the 31st, whose month starts before the window; the 1st; a leap
day; a bucket of tomorrow (usage may be reported 5 minutes ahead) — both must give the same usage.
"""

import itertools
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events import apikey
from events.account import CreateKey
from projections import key_view
from projections.usage import KeyUsage, window
from service.app import commands
from service.http.key_objects import key_object, usage_block, viewed_key_object, window_of
from service.store import db

_accounts = itertools.count()  # every example its own account: the database is shared by the examples

days = st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31))
amounts = st.decimals(min_value=0, max_value=Decimal("99999.999999999"), places=9, allow_nan=False)
buckets = st.dictionaries(st.integers(-45, 1), st.tuples(st.integers(0, 10**12), amounts), max_size=50)


@pytest.fixture
async def pool(database_url):
    pool = await db.create_pool(database_url, max_size=1)
    yield pool
    await pool.close()


async def new_key(pool, **fields) -> tuple[str, str]:
    """(account id, key id) of a new key of a new account."""
    account_id, secret = f"acct_view{next(_accounts)}", apikey.generate()
    command = CreateKey(apikey.new_key_id(), "viewed", apikey.digest(secret), apikey.last4(secret), **fields)
    await commands.execute(pool, account_id, command, {"actor": "test"})
    return account_id, command.key_id


async def store_usage(admin, account_id: str, key_id: str, today: date, by_offset: dict) -> KeyUsage:
    """The buckets as the projector would have left them (as owner), and the same usage in memory."""
    last_used_at = datetime.combine(today, time(12), UTC)
    daily = {today + timedelta(days=offset): usage for offset, usage in by_offset.items()}
    await admin.executemany(
        "INSERT INTO key_usage_daily (key_id, day, account_id, requests, cost_chf) VALUES ($1, $2, $3, $4, $5)",
        [(key_id, day, account_id, requests, cost) for day, (requests, cost) in daily.items()],
    )
    if not daily:
        return KeyUsage()
    requests = sum(requests for requests, _ in daily.values())
    cost = sum((cost for _, cost in daily.values()), Decimal(0)) + Decimal("0.000000001")  # older days too
    await admin.execute(
        """INSERT INTO key_usage_totals (key_id, account_id, requests, cost_chf, last_used_at)
           VALUES ($1, $2, $3, $4, $5)""",
        key_id,
        account_id,
        requests,
        cost,
        last_used_at,
    )
    return KeyUsage(requests, cost, last_used_at, daily)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(today=days, by_offset=buckets)
@example(today=date(2026, 12, 31), by_offset={-30: (7, Decimal("0.5")), -29: (1, Decimal("0.000000001"))})
@example(today=date(2026, 3, 1), by_offset={0: (1, Decimal(1)), -1: (2, Decimal(2)), 1: (3, Decimal(3))})
@example(today=date(2028, 2, 29), by_offset={-29: (1, Decimal(1)), -30: (1, Decimal(1))})
@example(today=date(2026, 11, 30), by_offset={})
async def test_the_one_statement_sums_as_the_fold_does(pool, admin, today, by_offset):
    account_id, key_id = await new_key(pool)
    key_usage = await store_usage(admin, account_id, key_id, today, by_offset)
    now = datetime.combine(today, time(23, 59), UTC)
    window_, days_text = window_of(today)
    async with pool.acquire() as connection:
        row = await key_view.key_with_usage(connection, account_id, key_id, window_)

    viewed = viewed_key_object(row, days_text, now)

    assert viewed.usage == usage_block(key_usage, window(today))
    assert viewed.last_used_at == key_usage.last_used_at


async def test_the_key_fields_are_those_of_the_row_as_the_fold_renders_it(pool, admin):
    expires_at = datetime.now(UTC) + timedelta(days=3)
    account_id, key_id = await new_key(pool, expires_at=expires_at, monthly_spend_limit_chf="25.5")
    today = datetime.now(UTC).date()
    async with pool.acquire() as connection:
        row = await key_view.key_with_usage(connection, account_id, key_id, window_of(today)[0])
        stored = await connection.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    now = datetime.now(UTC)

    viewed = viewed_key_object(row, window_of(today)[1], now)

    assert viewed == key_object(stored, None, window(today), now)
    assert viewed.monthly_spend_limit_chf == "25.500000000"
    assert viewed.usage.total_cost_chf == "0.000000000"


async def test_another_accounts_key_is_not_in_the_view(pool):
    _, key_id = await new_key(pool)
    async with pool.acquire() as connection:
        assert (
            await key_view.key_with_usage(connection, "acct_other", key_id, window_of(date.today())[0])
            is None
        )
