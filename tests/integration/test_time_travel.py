"""Time travel: `GET …/api-keys/?as_of=T` answers with the keys as they stood at T, from the log.

The main test walks an account through creates, renames, revokes, usage and subscription changes,
and after each step keeps the live list and the database clock. Afterwards, `as_of` each kept time
must give exactly the list that was live then: every field, usage included.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.account import (
    Account,
    CreateKey,
    RevokeKey,
    SetSubscription,
    UpdateKey,
    decide,
    evolve,
)
from events.chain import timestamp_text
from events.errors import DomainError
from events.log import account_stream
from events.model import ApiKeyCreated
from projections import accounts as accounts_projection
from projections.key_rows import key_rows
from service.app.commands import load_account
from service.store import db, eventstore
from tests.helpers import (
    KEY_FIELDS,
    KEYS,
    activate,
    auth,
    create_key,
    deactivate,
    expect,
    expect_error,
    revoke,
    send_usage,
    usage_event,
    wait_until,
)

LIST = f"{KEYS}/"
OWNER = "acct_traveller"
OTHER = "acct_neighbour"


# Requests


async def live_list(client, account: str = OWNER) -> list[dict]:
    return (await expect(await client.get(LIST, headers=auth(account))))["data"]


async def list_as_of(client, as_of: str, account: str = OWNER) -> list[dict]:
    return (await expect(await client.get(LIST, params={"as_of": as_of}, headers=auth(account))))["data"]


async def rename(client, key_id: str, name: str, account: str = OWNER) -> dict:
    response = await client.patch(f"{KEYS}/{key_id}/update/", json={"name": name}, headers=auth(account))
    return await expect(response)


async def report(client, *events: dict) -> None:
    await expect(await send_usage(client, list(events)), 202)


def in_zone(moment: datetime, hours: int) -> str:
    """The same instant written with another UTC offset, to the microsecond."""
    return moment.astimezone(timezone(timedelta(hours=hours))).isoformat(timespec="microseconds")


# Moments


@dataclass(frozen=True)
class Moment:
    step: str
    at: datetime  # the database clock right after the step: the clock recorded_at is read from
    keys: list[dict]  # the live list at that time


async def moment_after(client, admin, step: str, account: str = OWNER) -> Moment:
    keys = await live_list(client, account)
    return Moment(step, await admin.fetchval("SELECT clock_timestamp()"), keys)


async def usage_projected(client, requests: dict[str, int]) -> None:
    """Wait until the live list counts these requests per key (usage is projected within a second)."""

    async def counted() -> bool:
        keys = {key["id"]: key["usage"]["total_requests"] for key in await live_list(client)}
        return all(keys[key_id] == count for key_id, count in requests.items())

    await wait_until(counted, within=5)


async def away_from_utc_midnight(margin: timedelta = timedelta(minutes=1)) -> None:
    """Both answers show 30 UTC days ending on their day: keep the live list and as_of on one day."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
    if midnight - now < margin:
        await asyncio.sleep((midnight - now).total_seconds() + 1)


# 1. The list as it stood, after every step


async def test_as_of_each_step_answers_the_list_that_was_live_then(client, admin):
    await away_from_utc_midnight()
    now = datetime.now(UTC)
    neighbour = await create_key(client, OTHER, "Neighbour's key")
    moments = [await moment_after(client, admin, "before the account existed")]

    await activate(client, OWNER)
    production = await create_key(client, OWNER, "Production backend")
    moments.append(await moment_after(client, admin, "created the first key"))

    staging = await create_key(client, OWNER, "Staging")
    moments.append(await moment_after(client, admin, "created a second key"))

    await rename(client, production["id"], "Production (eu)")
    moments.append(await moment_after(client, admin, "renamed the first key"))

    await report(
        client,
        usage_event(production["id"], "r1", "0.000150", now),
        usage_event(production["id"], "r2", "1.000000001", now - timedelta(days=3)),
        usage_event(production["id"], "r3", "2.5", now - timedelta(days=31)),  # in the totals only
        usage_event(staging["id"], "r4", "0.000000001", now),
        usage_event(neighbour["id"], "r5", "7", now),
    )
    await usage_projected(client, {production["id"]: 3, staging["id"]: 1})
    moments.append(await moment_after(client, admin, "used both keys"))

    await revoke(client, OWNER, staging["id"])
    moments.append(await moment_after(client, admin, "revoked the second key"))

    batch = await create_key(client, OWNER, "Batch jobs")
    await rename(client, batch["id"], "Nightly batch")
    await rename(client, batch["id"], "Nightly batch (old)")
    moments.append(await moment_after(client, admin, "created a third key and renamed it twice"))

    await report(
        client,
        usage_event(production["id"], "r6", "0.333333333", now - timedelta(days=29)),
        usage_event(staging["id"], "r7", "0.1", now - timedelta(minutes=2)),  # reported after the revoke
    )
    await usage_projected(client, {production["id"]: 4, staging["id"]: 2})
    moments.append(await moment_after(client, admin, "used the first key again, and the revoked one late"))

    await deactivate(client, OWNER)
    await revoke(client, OWNER, production["id"])
    moments.append(await moment_after(client, admin, "cancelled the subscription, revoked the first key"))

    assert moments[0].keys == [] and len(moments[-1].keys) == 3, "the walk went as planned"
    assert moments[-1].keys[-1]["usage"]["total_cost_chf"] == "3.833483334"
    owned = {production["id"], staging["id"], batch["id"]}
    for moment in moments:
        for as_of in (timestamp_text(moment.at), in_zone(moment.at, 14), in_zone(moment.at, -12)):
            answer = await list_as_of(client, as_of)
            assert answer == moment.keys, f"as_of {as_of}, {moment.step}"
            assert {key["id"] for key in answer} <= owned
    assert await list_as_of(client, timestamp_text(moments[-1].at), OTHER) == await live_list(client, OTHER)


async def test_as_of_includes_an_event_recorded_at_that_very_microsecond_and_nothing_later(client, admin):
    key = await create_key(client, OWNER)
    recorded_at = await admin.fetchval("SELECT recorded_at FROM events WHERE type = 'ApiKeyCreated'")
    just_before = timestamp_text(recorded_at - timedelta(microseconds=1))

    assert [k["id"] for k in await list_as_of(client, timestamp_text(recorded_at))] == [key["id"]]
    # Nanoseconds are cut, not rounded up to the microsecond the key was recorded in.
    assert await list_as_of(client, just_before.replace("Z", "999Z")) == []
    assert await list_as_of(client, just_before) == []


async def test_as_of_before_the_account_existed_is_an_empty_list(client):
    await create_key(client, OWNER)
    assert await list_as_of(client, "2000-01-01T00:00:00Z") == []
    assert await list_as_of(client, "0001-01-01T00:00:00Z") == []
    assert await list_as_of(client, "2000-01-01T00:00:00Z", account="acct_never_seen") == []


async def test_another_accounts_keys_never_appear(client, admin):
    mine = await create_key(client, OWNER, "mine")
    theirs = await create_key(client, OTHER, "theirs")
    await rename(client, theirs["id"], "theirs, renamed", account=OTHER)
    at = timestamp_text(await admin.fetchval("SELECT clock_timestamp()"))

    assert [key["id"] for key in await list_as_of(client, at)] == [mine["id"]]
    assert [key["id"] for key in await list_as_of(client, at, OTHER)] == [theirs["id"]]


async def test_the_full_key_never_appears_in_an_as_of_answer(client, admin):
    first, second = await create_key(client, OWNER, "first"), await create_key(client, OWNER, "second")
    await rename(client, first["id"], "renamed")
    await revoke(client, OWNER, second["id"])
    at = timestamp_text(await admin.fetchval("SELECT clock_timestamp()"))

    response = await client.get(LIST, params={"as_of": at}, headers=auth(OWNER))
    text = await response.text()
    keys = (await expect(response))["data"]

    assert [set(key) for key in keys] == [KEY_FIELDS, KEY_FIELDS]
    assert [key["masked_key"] for key in keys] == [f"sk-***...{k['key'][-4:]}" for k in (second, first)]
    for secret in (first["key"], second["key"]):
        assert secret.removeprefix("sk-") not in text


# 2. An answer about the past never changes


async def test_an_as_of_answer_waits_for_an_append_still_in_flight(client, admin, database_url):
    """An append holds APPEND_LOCK from its recorded_at until it commits: as_of a time after that
    recorded_at must wait for the commit, or the same question would get another answer later."""
    await create_key(client, OWNER, "committed")
    writer = await db.connect(database_url)
    try:
        transaction = writer.transaction()
        await transaction.start()
        state = await load_account(writer, OWNER)
        late = ApiKeyCreated(
            key_id="key_in_flight",
            name="in flight",
            key_digest="ab" * 32,
            last4="Zz42",
            created_at=datetime.now(UTC),
        )
        stored = await eventstore.append(
            writer, account_stream(OWNER), OWNER, state.version, [late], {"actor": "test"}
        )
        await accounts_projection.apply(writer, stored)
        as_of = timestamp_text(await admin.fetchval("SELECT clock_timestamp()"))
        answer = asyncio.create_task(client.get(LIST, params={"as_of": as_of}, headers=auth(OWNER)))
        await asyncio.sleep(0.5)
        assert not answer.done(), "the answer did not wait for the append that recorded before as_of"
        await transaction.commit()
    finally:
        await writer.close()

    first_answer = (await expect(await answer))["data"]
    assert [key["name"] for key in first_answer] == ["in flight", "committed"]
    assert await list_as_of(client, as_of) == first_answer


# 3. Refused as_of values and parameters


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("as_of=", id="empty"),
        pytest.param("as_of=yesterday", id="words"),
        pytest.param("as_of=1790000000", id="unix-seconds"),
        pytest.param("as_of=2026-11-01", id="date-only"),
        pytest.param("as_of=2026-11-01T00:00:00", id="no-zone"),
        pytest.param("as_of=2026-11-01T00:00Z", id="no-seconds"),
        pytest.param("as_of=20261101T000000Z", id="iso-basic-format"),
        pytest.param("as_of=2026-02-30T00:00:00Z", id="no-such-day"),
        pytest.param("as_of=2026-11-01T00:00:00+01:00", id="plus-not-encoded"),
    ],
)
async def test_an_as_of_that_is_not_an_rfc3339_time_with_a_zone_is_refused(client, query):
    await create_key(client, OWNER)
    response = await client.get(f"{LIST}?{query}", headers=auth(OWNER))
    message = await expect_error(response, 400, "invalid_request")
    assert "as_of" in message and "RFC 3339" in message and "2026-11-01T00:00:00Z" in message
    if "+" in query:
        assert "%2B" in message


@pytest.mark.parametrize(
    ("query", "status", "type_", "says"),
    [
        pytest.param("as_of=9999-12-31T23:59:59Z", 422, "unprocessable", "future", id="future"),
        pytest.param("as_of=0001-01-01T00:00:00%2B01:00", 400, "invalid_request", "9999", id="before-year-1"),
        pytest.param("asof=2026-11-01T00:00:00Z", 400, "invalid_request", "asof", id="misspelt"),
        pytest.param("limit=10", 400, "invalid_request", "limit", id="unknown-parameter"),
        pytest.param(
            "as_of=2026-11-01T00:00:00Z&as_of=2026-11-02T00:00:00Z",
            400,
            "invalid_request",
            "once",
            id="twice",
        ),
    ],
)
async def test_other_refused_queries_say_what_is_wrong(client, query, status, type_, says):
    response = await client.get(f"{LIST}?{query}", headers=auth(OWNER))
    assert says in await expect_error(response, status, type_)


async def test_a_time_just_ahead_of_the_database_clock_is_in_the_future(client, admin):
    ahead = await admin.fetchval("SELECT clock_timestamp() + interval '1 minute'")
    response = await client.get(LIST, params={"as_of": timestamp_text(ahead)}, headers=auth(OWNER))
    assert "future" in await expect_error(response, 422, "unprocessable")


async def test_without_credentials_as_of_answers_401_first(client):
    response = await client.get(LIST, params={"as_of": "not a time"})
    await expect_error(response, 401, "authentication_required")


# 4. The fold, with no database


key_ids = st.sampled_from([f"key_{n}" for n in range(7)])
names = st.sampled_from(["prod", "dev", "", "  spaced  "])
commands = st.one_of(
    st.builds(lambda key_id, name: CreateKey(key_id, name, "ab" * 32, key_id[-4:]), key_ids, names),
    st.builds(UpdateKey, key_ids, names),
    st.builds(RevokeKey, key_ids),
    st.builds(SetSubscription, st.booleans(), st.sampled_from(["pro", "team"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=40))
def test_the_folded_rows_agree_with_the_decider_after_any_command_sequence(sequence):
    state, events, clock = Account(), [], datetime(2026, 11, 1, tzinfo=UTC)
    for command in sequence:
        clock += timedelta(seconds=1)
        try:
            new_events = decide(state, command, clock)
        except DomainError:
            continue
        for event in new_events:
            state = evolve(state, event)
        events += new_events

    rows = key_rows(events)

    assert [row["key_id"] for row in rows] == list(reversed(state.keys)), "newest first"
    for row in rows:
        key = state.keys[row["key_id"]]
        assert (row["name"], row["status"]) == (key.name, "revoked" if key.revoked else "active")
        assert (row["revoked_at"] is None) == (not key.revoked)
        assert row["created_at"] <= (row["revoked_at"] or row["created_at"])
        assert row["last4"] == row["key_id"][-4:]
