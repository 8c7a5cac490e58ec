"""`keyledger replay`: the projections rebuilt from the log are the live ones, row for row; a tampered
live row is named, and --swap puts the log's truth back.

The app runs beside the replay, as in production: its projector keeps the live usage projections, and
its endpoints show what a user would see. The replay runs as the command line runs it, in a thread
of its own (it starts its own event loop), on the same database.
"""

import asyncio
import re
import time

import asyncpg
import pytest

from events.log import REPLAY_LOCK
from projections.shadow import SHADOW, TABLES
from service import cli
from service.http.app import create_app
from service.store import db
from tests.helpers import (
    KEYS,
    activate,
    auth,
    create_key,
    expect,
    send_usage,
    usage_event,
    verify_status,
    wait_until,
)
from tests.mixed_log import MixedLog

ACCOUNT = "acct_replay"
EVERY_EVENT_TYPE = {
    "ApiKeyCreated",
    "ApiKeyRenamed",
    "ApiKeyRevoked",
    "SubscriptionActivated",
    "SubscriptionDeactivated",
    "UsageRecorded",
}


@pytest.fixture
def replay(monkeypatch, capsys, database_url):
    """Run `keyledger replay ARGS` on the test's database; its exit code and standard output."""
    monkeypatch.setenv("KEYLEDGER_DATABASE_URL", database_url)

    async def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["replay", *args])
        return code, capsys.readouterr().out

    return run


@pytest.fixture
async def pool(database_url) -> db.Pool:
    """A pool as the service role, for writers that run commands as the API does."""
    pool = await db.create_pool(database_url, max_size=8)
    yield pool
    await pool.close()


async def live_projector_caught_up(admin: asyncpg.Connection, within: float = 30) -> None:
    async def caught_up() -> bool:
        return await admin.fetchval(
            """SELECT coalesce((SELECT position FROM projector_checkpoints WHERE projector = 'usage'), 0)
                      = (SELECT coalesce(max(position), 0) FROM events)"""
        )

    await wait_until(caught_up, within)


async def compared_with_the_shadow(admin: asyncpg.Connection, table: str) -> tuple[int, int, int]:
    """Rows live, rows in the shadow, rows that only one side has (EXCEPT ALL both ways)."""
    return await admin.fetchrow(
        f"""SELECT (SELECT count(*) FROM public.{table}), (SELECT count(*) FROM {SHADOW}.{table}),
                   (SELECT count(*) FROM (
                        (SELECT * FROM public.{table} EXCEPT ALL SELECT * FROM {SHADOW}.{table})
                        UNION ALL
                        (SELECT * FROM {SHADOW}.{table} EXCEPT ALL SELECT * FROM public.{table})) AS d)"""
    )


async def assert_usage_is_the_recount(admin: asyncpg.Connection) -> None:
    """The live usage totals against a count over the log itself."""
    projected = await admin.fetchrow("SELECT sum(requests), sum(cost_chf) FROM key_usage_totals")
    counted = await admin.fetchrow(
        "SELECT count(*), sum((data->>'cost_chf')::numeric) FROM event_log WHERE type = 'UsageRecorded'"
    )
    assert tuple(projected) == tuple(counted)


async def test_a_replay_of_100_000_mixed_events_from_concurrent_writers_equals_the_live_projections(
    client, database_url, admin, pool, replay, capsys
):
    log = MixedLog(database_url, pool, seed=1)
    await log.open_accounts(300)
    await asyncio.gather(log.write_usage(100_000), log.change_lifecycle(800))
    events, accounts = await admin.fetchrow("SELECT count(*), count(DISTINCT account_id) FROM events")
    assert events >= 100_000 and accounts == 300
    assert {row["type"] for row in await admin.fetch("SELECT DISTINCT type FROM events")} == EVERY_EVENT_TYPE
    await live_projector_caught_up(admin)

    started = time.monotonic()
    code, output = await replay("--quiet")
    seconds = time.monotonic() - started

    assert code == 0, output
    assert "No differences" in output
    for table in TABLES:
        live, replayed, differing = await compared_with_the_shadow(admin, table)
        assert live > 0 and replayed == live and differing == 0, table
    await assert_usage_is_the_recount(admin)
    with capsys.disabled():
        print(f"\nreplay of {events:,} events: {seconds:.1f} s, {events / seconds:,.0f} events/s")


async def test_a_tampered_projection_is_named_and_swap_repairs_it(
    client, aiohttp_client, settings, admin, replay
):
    await activate(client, ACCOUNT)
    used, deleted = await create_key(client, ACCOUNT, "used"), await create_key(client, ACCOUNT, "deleted")
    later = await create_key(client, ACCOUNT, "later")  # key caches have followed past `deleted`
    response = await send_usage(client, [usage_event(used["id"], f"r{n}") for n in range(3)])
    await expect(response, 202)
    await wait_until(lambda: usage_requests(admin, used["id"], 3), within=5)

    await admin.execute("UPDATE key_usage_totals SET requests = requests + 1 WHERE key_id = $1", used["id"])
    await admin.execute("DELETE FROM api_keys WHERE key_id = $1", deleted["id"])
    await admin.execute("INSERT INTO subscriptions VALUES ('acct_forged', 'active', 'free', now(), 1)")
    # A view on the table, as the analysts' views are: the swap must keep it (and its rows current).
    await admin.execute("CREATE VIEW key_names AS SELECT key_id, name FROM api_keys")
    code, output = await replay()
    assert code == 1, output
    assert "key_usage_totals: 1 live row(s) that the log does not give, 1 row(s) that" in output
    assert f"key_id='{used['id']}': differs: requests live 4, replayed 3" in output
    assert f"key_id='{deleted['id']}': missing from live: account_id='{ACCOUNT}' name='deleted'" in output
    assert "account_id='acct_forged': only in live (no event gives it)" in output
    assert await key_ids(client) == [later["id"], used["id"]], (
        "a replay without --swap changed the live tables"
    )
    started_now = await aiohttp_client(create_app(settings))  # its key cache loads the tampered tables
    assert await verify_status(started_now, deleted["key"]) == 403

    code, output = await replay("--swap")
    assert code == 0, output
    assert "Replaced the rows of api_keys, subscriptions, key_usage_totals with the replayed ones" in output
    code, output = await replay()
    assert code == 0 and "No differences" in output, output
    assert await key_ids(client) == [later["id"], deleted["id"], used["id"]]
    view = await expect(await client.get(f"{KEYS}/{used['id']}/", headers=auth(ACCOUNT)))
    assert view["usage"]["total_requests"] == 3
    assert await admin.fetchval("SELECT name FROM key_names WHERE key_id = $1", deleted["id"]) == "deleted"

    # The app that loaded the tampered tables reloads its key cache on the swap: no restart needed.
    async def verified() -> bool:
        return await verify_status(started_now, deleted["key"]) == 200

    await wait_until(verified, within=3)


async def usage_requests(admin: asyncpg.Connection, key_id: str, requests: int) -> bool:
    return await admin.fetchval("SELECT requests FROM key_usage_totals WHERE key_id = $1", key_id) == requests


async def key_ids(client) -> list[str]:
    listed = await expect(await client.get(f"{KEYS}/", headers=auth(ACCOUNT)))
    return [key["id"] for key in listed["data"]]


class Writing:
    """Lifecycle commands and usage appends, without pause, until the block ends."""

    def __init__(self, log: MixedLog):
        self._log, self._stop = log, asyncio.Event()

    async def _write(self) -> None:
        while not self._stop.is_set():
            await asyncio.gather(
                self._log.write_usage(1_000, writers=2, batch=250), self._log.change_lifecycle(6, writers=2)
            )

    async def __aenter__(self) -> "Writing":
        self._task = asyncio.create_task(self._write())
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._stop.set()
        await self._task


async def head(admin: asyncpg.Connection) -> int:
    return await admin.fetchval("SELECT max(position) FROM events")


async def test_replays_during_concurrent_writes_find_no_false_differences(
    client, database_url, admin, pool, replay
):
    log = MixedLog(database_url, pool, seed=3)
    await log.open_accounts(40)
    async with Writing(log):
        for _ in range(3):
            before = await head(admin)
            code, output = await replay("--quiet")
            after = await head(admin)
            assert code == 0 and "No differences" in output, output
            [compared_at] = re.findall(r"up to position (\d+)", output)
            assert before < int(compared_at) <= after, "the log did not grow during the replay"


async def test_a_swap_during_concurrent_writes_neither_loses_nor_double_counts(
    client, database_url, admin, pool, replay
):
    log = MixedLog(database_url, pool, seed=4)
    await log.open_accounts(40)
    await log.write_usage(10_000)
    await live_projector_caught_up(admin)
    await admin.execute("UPDATE key_usage_totals SET requests = requests + 1000")
    await admin.execute("UPDATE key_usage_daily SET cost_chf = cost_chf + 1")
    async with Writing(log):
        code, output = await replay("--swap", "--quiet")
        assert code == 0 and "Replaced the rows of key_usage_totals, key_usage_daily" in output, output
    await live_projector_caught_up(admin)
    await assert_usage_is_the_recount(admin)
    code, output = await replay("--quiet")
    assert code == 0 and "No differences" in output, output


async def test_a_second_replay_at_the_same_time_is_refused(admin, replay):
    await admin.execute("SELECT pg_advisory_lock($1)", REPLAY_LOCK)  # as a running replay holds it
    code, output = await replay("--quiet")
    assert code == 2 and output == ""
