"""Usage reports (`POST /api/v1/usage/`, service token) and the usage they add to each key's view.

The app runs its projector in the background, as in production: tests wait for the projection
by polling the key view, and the one about latency measures it.
"""

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from service.http.app import create_app
from tests.helpers import (
    USAGE,
    auth,
    chf,
    create_key,
    expect,
    expect_error,
    post_body,
    revoke,
    rfc3339,
    send_usage,
    service_headers,
    table_counts,
    usage_event,
    utc,
    view_key,
    wait_until,
)

ACCOUNT = "acct_usage"
OTHER = "acct_usage_other"
UNKNOWN_KEY_ID = "key_0000000000000000000000"
PROJECTION_DEADLINE = 1.0  # SPEC: usage shows up in the key's stats within 1 second
SETTLE = 5.0  # how long tests that are not about the deadline wait for the projection


@pytest.fixture
async def key(client) -> dict:
    return await create_key(client, ACCOUNT)


async def usage_of(client, key_id: str, account: str = ACCOUNT) -> dict:
    return (await view_key(client, account, key_id))["usage"]


async def wait_for_requests(
    client, key_id: str, requests: int, within: float, account: str = ACCOUNT
) -> float:
    async def projected() -> bool:
        total = (await usage_of(client, key_id, account))["total_requests"]
        assert total <= requests, f"the key shows {total} requests, more than the {requests} reported"
        return total == requests

    return await wait_until(projected, within)


async def expect_accepted(response, accepted: int, duplicates: int = 0) -> None:
    assert await expect(response, 202) == {"accepted": accepted, "duplicates": duplicates}


def expected_usage(events: list[dict]) -> tuple[int, Decimal, dict[date, tuple[int, Decimal]]]:
    """Requests, CHF and UTC daily buckets the events add up to."""
    days: dict[date, tuple[int, Decimal]] = {}
    for event in events:
        day = utc(event["occurred_at"]).date()
        requests, cost = days.get(day, (0, Decimal(0)))
        days[day] = (requests + 1, cost + Decimal(event["cost_chf"]))
    return (
        len(events),
        sum((Decimal(event["cost_chf"]) for event in events), Decimal(0)),
        days,
    )


def assert_usage(usage: dict, events: list[dict]) -> None:
    requests, cost, days = expected_usage(events)
    assert usage["total_requests"] == requests
    assert usage["total_cost_chf"] == chf(cost)
    today = datetime.now(UTC).date()
    daily = usage["last_30_days"]["daily"]
    assert [entry["date"] for entry in daily] == [
        (today - timedelta(days=offset)).isoformat() for offset in range(29, -1, -1)
    ], "30 UTC days, oldest first, today last"
    for entry in daily:
        day_requests, day_cost = days.get(date.fromisoformat(entry["date"]), (0, Decimal(0)))
        assert (entry["requests"], entry["cost_chf"]) == (day_requests, chf(day_cost)), entry["date"]
    in_window = [days.get(date.fromisoformat(entry["date"]), (0, Decimal(0))) for entry in daily]
    assert usage["last_30_days"]["requests"] == sum(requests for requests, _ in in_window)
    assert usage["last_30_days"]["cost_chf"] == chf(sum((cost for _, cost in in_window), Decimal(0)))


# Accepted usage and its projection


async def test_reported_usage_shows_in_the_key_view_within_a_second(client, key):
    other = await create_key(client, OTHER, "Other account")
    now = datetime.now(UTC)
    costs = ["0.000150", "0.25", "0", "1.000000001", "12.5"]
    mine = [
        usage_event(key["id"], f"req-{n}", cost, now - timedelta(minutes=n)) for n, cost in enumerate(costs)
    ]
    theirs = [usage_event(other["id"], "req-other", "0.75", now - timedelta(seconds=5))]

    response = await send_usage(client, mine + theirs)
    await expect_accepted(response, 6)
    elapsed = await wait_for_requests(client, key["id"], len(mine), within=5)
    assert elapsed < PROJECTION_DEADLINE, f"usage took {elapsed:.3f} s to show"

    view = await view_key(client, ACCOUNT, key["id"])
    assert_usage(view["usage"], mine)
    assert view["usage"]["total_cost_chf"] == "13.750150001"
    assert utc(view["last_used_at"]) == utc(mine[0]["occurred_at"])
    await wait_for_requests(client, other["id"], 1, within=SETTLE, account=OTHER)
    other_view = await view_key(client, OTHER, other["id"])
    assert_usage(other_view["usage"], theirs)
    # The list shows the same usage as the view.
    listed = await expect(await client.get("/api/v1/accounts/user/api-keys/", headers=auth(ACCOUNT)))
    assert [entry["usage"] for entry in listed["data"]] == [view["usage"]]


async def test_a_key_without_usage_shows_zeros_for_thirty_days(client, key):
    view = await view_key(client, ACCOUNT, key["id"])
    assert view["last_used_at"] is None
    assert_usage(view["usage"], [])
    assert view["usage"]["last_30_days"]["cost_chf"] == "0.000000000"


async def test_usage_of_a_key_revoked_after_the_request_is_still_counted(client, key):
    """The gateway reports after the fact: a request verified just before the revocation counts."""
    used_at = datetime.now(UTC) - timedelta(seconds=1)
    await revoke(client, ACCOUNT, key["id"])
    await expect_accepted(await send_usage(client, [usage_event(key["id"], "late", "0.5", used_at)]), 1)
    await wait_for_requests(client, key["id"], 1, within=SETTLE)


async def test_the_edges_of_the_accepted_time_window_are_accepted(client, key):
    now = datetime.now(UTC)
    events = [
        usage_event(key["id"], "ahead", occurred_at=now + timedelta(minutes=4)),
        usage_event(key["id"], "behind", occurred_at=now - timedelta(days=34)),
    ]
    await expect_accepted(await send_usage(client, events), 2)
    await wait_for_requests(client, key["id"], 2, within=SETTLE)
    assert_usage(await usage_of(client, key["id"]), events)


async def test_an_empty_batch_is_accepted_as_nothing(client, admin):
    await expect_accepted(await send_usage(client, []), 0)
    assert await admin.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'") == 0


# Daily buckets are UTC days


async def test_a_millisecond_before_and_at_utc_midnight_land_in_different_days(client, admin, key):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    events = [
        usage_event(key["id"], "before-midnight", "0.000000100", f"{yesterday.date()}T23:59:59.999Z"),
        usage_event(key["id"], "at-midnight", "0.000000200", f"{today.date()}T00:00:00Z"),
        # 00:30 in UTC+1 is 23:30 UTC the day before.
        usage_event(key["id"], "offset", "0.000000400", f"{today.date()}T00:30:00+01:00"),
    ]
    await expect_accepted(await send_usage(client, events), 3)
    await wait_for_requests(client, key["id"], 3, within=SETTLE)

    rows = await admin.fetch(
        "SELECT day, requests, cost_chf FROM key_usage_daily WHERE key_id = $1 ORDER BY day", key["id"]
    )
    assert [tuple(row) for row in rows] == [
        (yesterday.date(), 2, Decimal("0.000000500")),
        (today.date(), 1, Decimal("0.000000200")),
    ]
    view = await view_key(client, ACCOUNT, key["id"])
    *_, day_before, last_day = view["usage"]["last_30_days"]["daily"]
    assert day_before == {"date": yesterday.date().isoformat(), "requests": 2, "cost_chf": "0.000000500"}
    assert last_day == {"date": today.date().isoformat(), "requests": 1, "cost_chf": "0.000000200"}
    assert utc(view["last_used_at"]) == today


# Idempotency: request_id counts once, forever


def batch_of(key_id: str, size: int, prefix: str = "req") -> list[dict]:
    now = datetime.now(UTC)
    return [usage_event(key_id, f"{prefix}-{n}", f"0.{n + 1:09d}", now) for n in range(size)]


async def assert_counted_once(client, admin, key_id: str, batch: list[dict]) -> None:
    await wait_for_requests(client, key_id, len(batch), within=SETTLE)
    assert_usage(await usage_of(client, key_id), batch)
    assert await admin.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'") == len(batch)
    request_ids = await admin.fetch("SELECT idempotency_key FROM events WHERE type = 'UsageRecorded'")
    assert sorted(row[0] for row in request_ids) == sorted(event["request_id"] for event in batch)


async def test_a_batch_sent_three_times_is_counted_once(client, admin, key):
    batch = batch_of(key["id"], 50)
    answers = [await expect(await send_usage(client, batch), 202) for _ in range(3)]
    assert answers == [
        {"accepted": 50, "duplicates": 0},
        {"accepted": 0, "duplicates": 50},
        {"accepted": 0, "duplicates": 50},
    ]
    await assert_counted_once(client, admin, key["id"], batch)


async def test_a_batch_sent_by_three_instances_at_once_is_counted_once(
    client, admin, key, aiohttp_client, settings
):
    batch = batch_of(key["id"], 500)
    senders = [client, *[await aiohttp_client(create_app(settings)) for _ in range(2)]]
    answers = await asyncio.gather(*(send_and_read(sender, batch) for sender in senders))
    assert sum(answer["accepted"] for answer in answers) == 500, answers
    assert sum(answer["duplicates"] for answer in answers) == 1000, answers
    await assert_counted_once(client, admin, key["id"], batch)


async def send_and_read(client, batch: list[dict]) -> dict:
    return await expect(await send_usage(client, batch), 202)


async def test_a_request_id_twice_in_one_batch_counts_once_at_its_first_cost(client, admin, key):
    now = datetime.now(UTC)
    batch = [
        usage_event(key["id"], "same", "0.100000000", now),
        usage_event(key["id"], "other", "0.200000000", now),
        usage_event(key["id"], "same", "0.400000000", now),
    ]
    await expect_accepted(await send_usage(client, batch), 2, 1)
    await assert_counted_once(client, admin, key["id"], batch[:2])


async def test_a_request_id_reported_again_weeks_later_still_counts_once(client, admin, key):
    now = datetime.now(UTC)
    first = usage_event(key["id"], "again", "0.5", now - timedelta(days=20))
    await expect_accepted(await send_usage(client, [first]), 1)
    retry = usage_event(key["id"], "again", "0.7", now)  # same request_id, other content
    await expect_accepted(await send_usage(client, [retry]), 0, 1)
    await assert_counted_once(client, admin, key["id"], [first])


# A bad batch is refused whole, naming the bad event, and stores nothing

BAD_EVENTS = {
    # case: (field, value, status); None removes the field. 400: the event breaks a rule of the API;
    # 422: a well-formed event the log refuses (a key it does not hold, outside the time window).
    "unknown key": ("key_id", UNKNOWN_KEY_ID, 422),
    "negative cost": ("cost_chf", "-0.000150", 400),
    "cost not a number": ("cost_chf", "abc", 400),
    "cost in exponent notation": ("cost_chf", "1e-3", 400),
    "cost as a JSON number": ("cost_chf", 0.1, 400),
    "cost as a JSON integer": ("cost_chf", 1, 400),
    "cost empty": ("cost_chf", "", 400),
    "cost with a plus sign": ("cost_chf", "+0.1", 400),
    "cost with a decimal comma": ("cost_chf", "0,1", 400),
    "cost NaN": ("cost_chf", "NaN", 400),
    "cost Infinity": ("cost_chf", "Infinity", 400),
    "cost with 10 decimals": ("cost_chf", "0.0000000001", 400),
    "cost with spaces": ("cost_chf", " 0.1", 400),
    "occurred_at 6 minutes ahead": ("occurred_at", timedelta(minutes=6), 422),
    "occurred_at 35 days and an hour back": ("occurred_at", -timedelta(days=35, hours=1), 422),
    "occurred_at without a time zone": ("occurred_at", "2026-01-01T10:00:00", 400),
    "occurred_at not a time": ("occurred_at", "yesterday", 400),
    "no request_id": ("request_id", None, 400),
    "empty request_id": ("request_id", "", 400),
    "no key_id": ("key_id", None, 400),
    "no occurred_at": ("occurred_at", None, 400),
    "no cost_chf": ("cost_chf", None, 400),
    "no units": ("units", None, 400),
    "negative units": ("units", -1, 400),
    "no endpoint": ("endpoint", None, 400),
    "no model": ("model", None, 400),
}
_TYPES = {400: "invalid_request", 422: "unprocessable"}


def naming(field: str, value, status: int) -> str:
    """What the refusal of event [2] must say: the missing field, the malformed one, or the refused one."""
    if value is None:
        return f"missing required field `{field}` - at `$.events[2]`"
    return f"events[2].{field}" if status == 400 else f"events[2]: {field}"


def with_bad_event(good: list[dict], field: str, value) -> list[dict]:
    """The batch with its event [2] spoiled in one field."""
    bad = dict(good[2])
    if value is None:
        del bad[field]
    elif isinstance(value, timedelta):
        bad[field] = rfc3339(datetime.now(UTC) + value)
    else:
        bad[field] = value
    return [*good[:2], bad, *good[3:]]


async def settled_counts(client, admin) -> dict[str, int]:
    """Row counts once the background projector has made its checkpoint row (it adds it on start)."""
    await wait_until(lambda: admin.fetchval("SELECT count(*) FROM projector_checkpoints"), within=5)
    return await table_counts(admin)


@pytest.mark.parametrize(("field", "value", "status"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
async def test_a_batch_with_one_bad_event_is_refused_whole_naming_it(
    client, admin, key, field, value, status
):
    good = batch_of(key["id"], 5)
    before = await settled_counts(client, admin)

    response = await send_usage(client, with_bad_event(good, field, value))
    message = await expect_error(response, status, _TYPES[status])
    assert naming(field, value, status) in message, message
    for other in (0, 1, 3, 4):
        assert f"events[{other}]" not in message, message
    assert await table_counts(admin) == before, "part of a refused batch was stored"

    # Control: the same batch without the spoiled field passes, so event [2] alone was refused.
    await expect_accepted(await send_usage(client, good), 5)
    await wait_for_requests(client, key["id"], 5, within=SETTLE)


async def test_a_malformed_event_is_400_even_behind_an_event_the_log_refuses(client, admin, key):
    """A malformed request is 400 wherever it is malformed: the cost of event [3] is checked before
    the log is asked about the key of event [1]."""
    batch = batch_of(key["id"], 5)
    batch[1]["key_id"] = UNKNOWN_KEY_ID
    batch[3]["cost_chf"] = "1e-3"
    before = await settled_counts(client, admin)

    message = await expect_error(await send_usage(client, batch), 400, "invalid_request")
    assert "events[3].cost_chf" in message and "events[1]" not in message, message
    assert await table_counts(admin) == before

    batch[3]["cost_chf"] = "0.001"  # now well-formed: the log refuses the unknown key
    message = await expect_error(await send_usage(client, batch), 422, "unprocessable")
    assert "events[1]: key_id" in message, message
    assert await table_counts(admin) == before


async def test_a_batch_of_more_than_10000_events_is_refused(client, admin, key):
    now = datetime.now(UTC)
    before = await settled_counts(client, admin)
    too_many = [usage_event(key["id"], f"req-{n}", "0.000000001", now) for n in range(10_001)]
    response = await send_usage(client, too_many)
    assert "$.events" in await expect_error(response, 400, "invalid_request")
    assert await table_counts(admin) == before
    # Control: 10,000 are one full batch.
    await expect_accepted(await send_usage(client, too_many[:10_000]), 10_000)
    await wait_for_requests(client, key["id"], 10_000, within=SETTLE)


@pytest.mark.parametrize(
    "body",
    [{"events": "all of them"}, {}, {"events": [], "extra": 1}, [], "not json"],
    ids=["events not a list", "no events", "unknown field", "a list", "not JSON"],
)
async def test_a_body_that_is_not_a_batch_is_refused(client, admin, body):
    before = await settled_counts(client, admin)
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = await post_body(client, USAGE, raw, service_headers())
    await expect_error(response, 400, "invalid_request")
    assert await table_counts(admin) == before


# Only the gateway reports usage

CREDENTIALS = {
    "no credentials": ({}, "authentication_required"),
    "Basic": ({"Authorization": "Basic dXNlcjpwYXNz"}, "authentication_required"),
    "wrong service token": (service_headers("not-the-service-token"), "invalid_token"),
    "an account JWT": (auth(ACCOUNT), "invalid_token"),
}


@pytest.mark.parametrize(("headers", "type_"), CREDENTIALS.values(), ids=CREDENTIALS.keys())
async def test_usage_without_the_service_token_answers_401_and_stores_nothing(
    client, admin, key, headers, type_
):
    before = await settled_counts(client, admin)
    response = await client.post(USAGE, json={"events": batch_of(key["id"], 3)}, headers=headers)
    await expect_error(response, 401, type_)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await table_counts(admin) == before


async def test_the_owners_api_key_is_not_a_service_token(client, admin, key):
    before = await settled_counts(client, admin)
    response = await send_usage(
        client, batch_of(key["id"], 1), headers={"Authorization": f"Bearer {key['key']}"}
    )
    await expect_error(response, 401, "invalid_token")
    assert await table_counts(admin) == before


# Money is exact

MILLION, BATCH, SENDERS = 1_000_000, 10_000, 4


def raw_batch(key_id: str, first: int, size: int, occurred_at: str) -> bytes:
    """A batch of one-nano-franc events as JSON bytes, built without a JSON encoder."""
    template = (
        f'{{"request_id":"nano-%d","key_id":"{key_id}","occurred_at":"{occurred_at}",'
        '"cost_chf":"0.000000001","units":1,"endpoint":"/v1/embeddings","model":"m"}'
    )
    return b'{"events":[' + ",".join(template % n for n in range(first, first + size)).encode() + b"]}"


async def test_a_million_nano_franc_events_add_up_to_exactly_one_milli_franc(client, admin, key):
    occurred_at = rfc3339(datetime.now(UTC) - timedelta(seconds=1))
    gate = asyncio.Semaphore(SENDERS)
    answers: list[dict] = []

    async def send(first: int) -> None:
        body = raw_batch(key["id"], first, BATCH, occurred_at)
        async with gate:
            answers.append(await expect(await post_body(client, USAGE, body, service_headers()), 202))

    started = time.monotonic()
    await asyncio.gather(*(send(first) for first in range(0, MILLION, BATCH)))
    sent = time.monotonic() - started
    await wait_for_requests(client, key["id"], MILLION, within=120)
    projected = time.monotonic() - started
    print(f"\n1,000,000 usage events: sent in {sent:.1f} s, projected after {projected:.1f} s")

    assert Counter((answer["accepted"], answer["duplicates"]) for answer in answers) == {(BATCH, 0): 100}
    usage = await usage_of(client, key["id"])
    assert usage["total_requests"] == MILLION
    assert usage["total_cost_chf"] == "0.001000000"
    assert usage["last_30_days"]["requests"] == MILLION
    assert usage["last_30_days"]["cost_chf"] == "0.001000000"
    assert usage["last_30_days"]["daily"][-1] == {
        "date": utc(occurred_at).date().isoformat(),
        "requests": MILLION,
        "cost_chf": "0.001000000",
    }
    assert await admin.fetchval(
        "SELECT (count(*), sum((data->>'cost_chf')::numeric)) FROM event_log WHERE type = 'UsageRecorded'"
    ) == (MILLION, Decimal("0.001000000"))
