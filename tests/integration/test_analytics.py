"""Analysts: the read-only role `keyledger_analytics`, the views of docs/analytics.md, and
`keyledger usage-report`.

The analyst is a fresh login role granted `keyledger_analytics`, as an operator would set one up.
The ledger behind it is made through the API, with the app's projector folding the usage in.
"""

import asyncio
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from service import cli
from tests.helpers import (
    activate,
    auth,
    create_key,
    deactivate,
    expect,
    key_path,
    list_keys,
    revoke,
    rotate_key,
    send_usage,
    usage_event,
    wait_until,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
ACCOUNT = "acct_analytics"
OTHER = "acct_analytics_other"
SETTLE = 5.0  # seconds the projector gets to fold the usage in


def documented_views() -> dict[str, list[str]]:
    """Each `### analytics.…` section of the docs and the columns its table lists, in order."""
    views: dict[str, list[str]] = {}
    columns = None
    for line in DOCS.read_text().splitlines():
        if heading := re.fullmatch(r"### `(analytics\.\w+)`", line):
            columns = views.setdefault(heading.group(1), [])
        elif line.startswith("#"):
            columns = None
        elif columns is not None and (column := re.match(r"\| `(\w+)` \|", line)):
            columns.append(column.group(1))
    return views


DOCUMENTED_VIEWS = documented_views()
EXAMPLE_QUERIES = dict(re.findall(r"^([^\n]+):\n\n```sql\n(.*?)```", DOCS.read_text(), flags=re.M | re.S))


@pytest.fixture
async def analyst(admin, database_url) -> asyncpg.Connection:
    """A connection as a new login role that holds keyledger_analytics and nothing else."""
    role, password = f"analyst_{secrets.token_hex(6)}", secrets.token_hex(16)
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        await admin.execute(f"GRANT keyledger_analytics TO {role}")
        connection = await asyncpg.connect(database_url, user=role, password=password)
        try:
            yield connection
        finally:
            await connection.close()
    finally:
        await admin.execute(f"DROP ROLE {role}")


@dataclass(frozen=True)
class Ledger:
    production: str  # key ids
    batch: str
    other: str
    today: date

    @property
    def yesterday(self) -> date:
        return self.today - timedelta(days=1)

    @property
    def two_days_ago(self) -> date:
        return self.today - timedelta(days=2)


def at(day: date, hour: int, minute: int = 0, second: int = 0, microsecond: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, microsecond), UTC)


@pytest.fixture
async def ledger(client, admin) -> Ledger:
    """Two accounts; usage on three UTC days (both sides of a midnight); a rename, a revocation and
    three subscription changes."""
    await activate(client, ACCOUNT, "pro")
    production = (await create_key(client, ACCOUNT, "Production backend"))["id"]
    batch = (await create_key(client, ACCOUNT, "Batch"))["id"]
    other = (await create_key(client, OTHER, "Other's key"))["id"]
    ledger = Ledger(production, batch, other, datetime.now(UTC).date())
    usage = [
        (production, at(ledger.two_days_ago, 12), "1.123456789"),
        (production, at(ledger.yesterday, 23, 59, 59, 500_000), "0.000000001"),
        (production, at(ledger.today, 0, 0, 0, 500_000), "0.000150"),
        (production, at(ledger.today, 0, 0, 1), "2.5"),
        (batch, at(ledger.yesterday, 12), "0.1"),
        (batch, at(ledger.today, 0, 0, 2), "0.000150"),
        (other, at(ledger.yesterday, 12), "3"),
        (other, at(ledger.today, 0, 0, 3), "7"),
    ]
    events = [usage_event(key_id, f"req-{n}", cost, moment) for n, (key_id, moment, cost) in enumerate(usage)]
    assert (await expect(await send_usage(client, events), 202))["accepted"] == len(events)
    rename = await client.patch(
        f"{key_path(batch)}update/", json={"name": "Batch jobs"}, headers=auth(ACCOUNT)
    )
    await expect(rename)
    await revoke(client, ACCOUNT, batch)
    await deactivate(client, ACCOUNT)
    await activate(client, ACCOUNT, "team")

    async def projected() -> bool:
        return await admin.fetchval("SELECT coalesce(sum(requests), 0) FROM key_usage_totals") == len(usage)

    await wait_until(projected, SETTLE)
    return ledger


# The views


async def test_the_docs_document_exactly_the_views_of_the_analytics_schema(admin):
    views = await admin.fetch(
        "SELECT table_schema || '.' || table_name FROM information_schema.views WHERE table_schema = 'analytics'"
    )
    assert sorted(DOCUMENTED_VIEWS) == sorted(row[0] for row in views)


@pytest.mark.parametrize("view", sorted(DOCUMENTED_VIEWS))
async def test_the_analyst_reads_every_documented_view_with_its_documented_columns(analyst, ledger, view):
    statement = await analyst.prepare(f"SELECT * FROM {view}")
    assert [column.name for column in statement.get_attributes()] == DOCUMENTED_VIEWS[view]
    rows = await statement.fetch()
    assert rows, f"{view} shows the analyst nothing"
    assert {row["account_id"] for row in rows} <= {ACCOUNT, OTHER}


async def test_the_analyst_sees_the_keys_as_their_owners_do(analyst, ledger, client):
    listed = (await expect(await client.get("/api/v1/accounts/user/api-keys/", headers=auth(ACCOUNT))))[
        "data"
    ]
    rows = await analyst.fetch(
        "SELECT * FROM analytics.keys WHERE account_id = $1 ORDER BY created_at DESC", ACCOUNT
    )
    assert [(row["key_id"], row["name"], row["masked_key"], row["status"]) for row in rows] == [
        (key["id"], key["name"], key["masked_key"], key["status"]) for key in listed
    ]
    assert [row["name"] for row in rows] == ["Batch jobs", "Production backend"]
    assert [row["revoked_at"] is not None for row in rows] == [True, False]


async def test_the_analyst_sees_exact_usage_per_key_per_account_and_per_day(analyst, ledger):
    today, yesterday, before = ledger.today, ledger.yesterday, ledger.two_days_ago
    daily = await analyst.fetch("SELECT key_id, day, requests, cost_chf FROM analytics.key_usage_daily")
    assert {(row["key_id"], row["day"]): (row["requests"], row["cost_chf"]) for row in daily} == {
        (ledger.production, before): (1, Decimal("1.123456789")),
        (ledger.production, yesterday): (1, Decimal("0.000000001")),
        (ledger.production, today): (2, Decimal("2.500150000")),
        (ledger.batch, yesterday): (1, Decimal("0.1")),
        (ledger.batch, today): (1, Decimal("0.00015")),
        (ledger.other, yesterday): (1, Decimal(3)),
        (ledger.other, today): (1, Decimal(7)),
    }
    totals = await analyst.fetch("SELECT key_id, requests, cost_chf FROM analytics.key_usage_totals")
    assert {row["key_id"]: (row["requests"], row["cost_chf"]) for row in totals} == {
        ledger.production: (4, Decimal("3.623606790")),
        ledger.batch: (2, Decimal("0.100150000")),
        ledger.other: (2, Decimal(10)),
    }
    accounts = await analyst.fetch("SELECT * FROM analytics.account_usage_daily")
    assert {(row["account_id"], row["day"]): tuple(row)[2:] for row in accounts} == {
        (ACCOUNT, before): (1, 1, Decimal("1.123456789")),
        (ACCOUNT, yesterday): (2, 2, Decimal("0.100000001")),
        (ACCOUNT, today): (2, 3, Decimal("2.500300000")),
        (OTHER, yesterday): (1, 1, Decimal(3)),
        (OTHER, today): (1, 1, Decimal(7)),
    }
    assert sum(row["cost_chf"] for row in accounts) == sum(row["cost_chf"] for row in daily)


async def test_the_analyst_sees_every_subscription_change_in_log_order(analyst, ledger):
    rows = await analyst.fetch(
        "SELECT * FROM analytics.subscription_history WHERE account_id = $1 ORDER BY position", ACCOUNT
    )
    assert [(row["status"], row["plan"]) for row in rows] == [
        ("active", "pro"),
        ("inactive", None),
        ("active", "team"),
    ]
    changes = [row["changed_at"] for row in rows]
    assert changes == sorted(changes) and all(row["recorded_at"] >= row["changed_at"] for row in rows)
    assert (
        await analyst.fetchval(
            "SELECT count(*) FROM analytics.subscription_history WHERE account_id = $1", OTHER
        )
        == 0
    )


@pytest.mark.parametrize("title", EXAMPLE_QUERIES)
async def test_every_example_query_of_the_docs_runs_as_the_analyst(analyst, ledger, title):
    await analyst.fetch(EXAMPLE_QUERIES[title])


# What the analyst cannot do


async def writable_relations(admin) -> list[tuple[str, list[str]]]:
    """Every table and view outside the system schemas, with its columns."""
    rows = await admin.fetch(
        """SELECT format('%I.%I', table_schema, table_name) AS relation,
                  array_agg(format('%I', column_name) ORDER BY ordinal_position) AS columns
           FROM information_schema.columns
           WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg\\_%'
           GROUP BY table_schema, table_name ORDER BY 1"""
    )
    relations = [(row["relation"], row["columns"]) for row in rows]
    assert {"public.events", "public.api_keys", "analytics.keys"} <= {relation for relation, _ in relations}
    return relations


async def refused(connection: asyncpg.Connection, statement: str) -> bool:
    """Whether PostgreSQL refuses the statement for lack of a privilege (not a trigger, not a constraint)."""
    try:
        await connection.execute(statement)
    except asyncpg.InsufficientPrivilegeError as error:
        return str(error).startswith("permission denied")
    return False


async def test_the_analyst_can_insert_update_or_delete_nothing_anywhere(analyst, ledger, admin):
    allowed = []
    for relation, columns in await writable_relations(admin):
        for statement in (
            f"INSERT INTO {relation} DEFAULT VALUES",
            f"UPDATE {relation} SET {columns[0]} = DEFAULT",
            f"DELETE FROM {relation}",
        ):
            if not await refused(analyst, statement):
                allowed.append(statement)
    assert allowed == []


async def test_the_analyst_can_create_nothing_in_the_ledger_schemas(analyst):
    for schema in ("public", "analytics"):
        assert await refused(analyst, f"CREATE TABLE {schema}.notes (line text)"), schema
        assert await refused(analyst, f"CREATE VIEW {schema}.notes AS SELECT 1 AS one"), schema


async def test_the_views_refuse_writes_from_their_owner_too(admin, ledger):
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="analytics views are read-only"):
        await admin.execute("UPDATE analytics.keys SET name = 'changed'")
    assert await admin.fetchval("SELECT count(*) FROM api_keys WHERE name = 'changed'") == 0


async def test_the_analyst_cannot_read_any_table_and_so_no_key_digest(analyst, ledger, admin):
    for relation in ("public.api_keys", "public.events"):
        assert await refused(analyst, f"SELECT * FROM {relation}"), relation
    tables = await admin.fetch(
        "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert [table[0] for table in tables if not await refused(analyst, f"SELECT * FROM {table[0]}")] == []


async def test_no_analytics_view_shows_or_is_computed_from_a_key_digest(admin):
    named = await admin.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'analytics' AND column_name ILIKE '%digest%'"
    )
    assert named == []
    computed = await admin.fetch(
        "SELECT view_name FROM information_schema.view_column_usage "
        "WHERE view_schema = 'analytics' AND column_name = 'key_digest'"
    )
    assert computed == []


# keyledger usage-report


async def report(monkeypatch, database_url: str, *args: str) -> int:
    """Run the command as a person would (it runs its own event loop, so in a thread)."""
    monkeypatch.setenv("KEYLEDGER_DATABASE_URL", database_url)
    return await asyncio.to_thread(cli.main, ["usage-report", *args])


async def test_the_csv_report_has_exact_daily_rows_and_totals_for_the_range_only(
    ledger, database_url, monkeypatch, capsys
):
    days = ["--from", str(ledger.yesterday), "--to", str(ledger.today)]
    assert await report(monkeypatch, database_url, "--account", ACCOUNT, *days, "--format", "csv") == 0
    production, batch, yesterday, today = ledger.production, ledger.batch, ledger.yesterday, ledger.today
    assert capsys.readouterr().out.splitlines() == [
        "key_id,name,date,requests,cost_chf",
        f"{production},Production backend,{yesterday},1,0.000000001",
        f"{production},Production backend,{today},2,2.500150000",
        f"{production},Production backend,total,3,2.500150001",
        f"{batch},Batch jobs,{yesterday},1,0.100000000",
        f"{batch},Batch jobs,{today},1,0.000150000",
        f"{batch},Batch jobs,total,2,0.100150000",
        ",all keys,total,5,2.600300001",
    ]


async def test_the_json_report_has_exact_daily_usage_and_totals(ledger, database_url, monkeypatch, capsys):
    days = ["--from", str(ledger.two_days_ago), "--to", str(ledger.today)]
    assert await report(monkeypatch, database_url, "--account", ACCOUNT, *days, "--format", "json") == 0

    def day(when: date, requests: int, cost: str) -> dict:
        return {"date": str(when), "requests": requests, "cost_chf": cost}

    assert json.loads(capsys.readouterr().out) == {
        "account_id": ACCOUNT,
        "from": str(ledger.two_days_ago),
        "to": str(ledger.today),
        "keys": [
            {
                "key_id": ledger.production,
                "name": "Production backend",
                "days": [
                    day(ledger.two_days_ago, 1, "1.123456789"),
                    day(ledger.yesterday, 1, "0.000000001"),
                    day(ledger.today, 2, "2.500150000"),
                ],
                "total": {"requests": 4, "cost_chf": "3.623606790"},
            },
            {
                "key_id": ledger.batch,
                "name": "Batch jobs",
                "days": [day(ledger.yesterday, 1, "0.100000000"), day(ledger.today, 1, "0.000150000")],
                "total": {"requests": 2, "cost_chf": "0.100150000"},
            },
        ],
        "total": {"requests": 6, "cost_chf": "3.723756790"},
    }


async def test_the_default_table_report_aligns_the_numbers(ledger, database_url, monkeypatch, capsys):
    day = str(ledger.today)
    assert await report(monkeypatch, database_url, "--account", OTHER, "--from", day, "--to", day) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Usage of {OTHER} from {day} to {day} (UTC days with usage)"
    assert [line.split() for line in lines[2:]] == [
        ["key_id", "name", "date", "requests", "cost_chf"],
        [ledger.other, "Other's", "key", day, "1", "7.000000000"],
        [ledger.other, "Other's", "key", "total", "1", "7.000000000"],
        ["all", "keys", "total", "1", "7.000000000"],
    ]
    assert len({len(line) for line in lines[2:]}) == 1, "the columns are not aligned"


async def test_an_account_without_usage_gets_zero_totals_and_a_note(database_url, monkeypatch, capsys):
    args = ["--account", "acct_nobody", "--from", "2026-01-01", "--to", "2026-01-31", "--format", "csv"]
    assert await report(monkeypatch, database_url, *args) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["key_id,name,date,requests,cost_chf", ",all keys,total,0,0.000000000"]
    assert "'acct_nobody' has no usage from 2026-01-01 to 2026-01-31" in err


async def test_a_database_without_the_views_is_told_to_migrate(admin, database_url, monkeypatch, capsys):
    await admin.execute("DROP SCHEMA analytics CASCADE")
    args = ["--account", ACCOUNT, "--from", "2026-01-01", "--to", "2026-01-31"]
    assert await report(monkeypatch, database_url, *args) == 2
    assert "run `keyledger migrate`" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["2026-02-30", "yesterday", "30.11.2026", ""])
def test_a_day_that_is_not_a_date_exits_2_saying_how_to_write_it(bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["usage-report", "--account", ACCOUNT, "--from", bad, "--to", "2026-11-30"])
    assert stopped.value.code == 2
    assert f"argument --from: {bad!r} is not a date; write a UTC day as YYYY-MM-DD" in capsys.readouterr().err


def test_from_after_to_exits_2_saying_which_comes_first(capsys):
    assert cli.main(["usage-report", "--account", ACCOUNT, "--from", "2026-11-30", "--to", "2026-11-01"]) == 2
    assert (
        "--from 2026-11-30 is after --to 2026-11-01; give the earlier day as --from"
        in capsys.readouterr().err
    )


async def test_the_analyst_sees_expiry_spend_limits_rotations_and_monthly_spend_as_the_api_does(
    analyst, ledger, client
):
    account = ACCOUNT
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    limited = await create_key(
        client, account, "Limited", expires_at=expires.isoformat(), monthly_spend_limit_chf="25.5"
    )
    replaced = await expect(
        await rotate_key(client, account, limited["id"], {"grace_period_seconds": 0}), 201
    )
    keys = {key["id"]: key for key in await list_keys(client, account)}
    rows = {
        row["key_id"]: row
        for row in await analyst.fetch("SELECT * FROM analytics.keys WHERE account_id = $1", account)
    }
    assert rows.keys() == keys.keys()
    for key_id, key in keys.items():
        row = rows[key_id]
        assert (row["rotated_from"], row["rotated_to"], row["revoked_reason"]) == (
            key["rotated_from"],
            key["rotated_to"],
            key["revoked_reason"],
        )
        limit = key["monthly_spend_limit_chf"]
        assert row["monthly_spend_limit_chf"] == (None if limit is None else Decimal(limit))
        assert row["expires_at"] == (
            None if key["expires_at"] is None else datetime.fromisoformat(key["expires_at"])
        )
    old, new = rows[limited["id"]], rows[replaced["id"]]
    assert (old["rotated_to"], old["revoked_reason"], new["rotated_from"]) == (
        replaced["id"],
        "rotated",
        limited["id"],
    )
    # a grace period of 0 ends it now, before its own expiry
    assert old["expires_at"] < expires and old["monthly_spend_limit_chf"] == Decimal("25.500000000")
    assert new["expires_at"] is None and new["monthly_spend_limit_chf"] == Decimal("25.5")

    month = ledger.today.replace(day=1)
    monthly = await analyst.fetch(
        "SELECT key_id, requests, cost_chf FROM analytics.key_usage_monthly WHERE month = $1 ORDER BY key_id",
        month,
    )
    daily = await analyst.fetch(
        """SELECT key_id, sum(requests)::bigint AS requests, sum(cost_chf) AS cost_chf
           FROM analytics.key_usage_daily WHERE date_trunc('month', day) = $1 GROUP BY key_id ORDER BY key_id""",
        month,
    )
    assert monthly and [tuple(row) for row in monthly] == [tuple(row) for row in daily]
