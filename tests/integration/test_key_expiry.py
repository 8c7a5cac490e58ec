"""A key's expiry and monthly spend limit as fields of create and update, and expiry at its instant
(SPEC "Expiry, rotation, spend limits"), black-box over HTTP on a real PostgreSQL.

Enforcing the spend limit at verification is tests/integration/test_spend_limit.py's. Expiry tests
wait for a real instant a few seconds ahead: no event marks it, so only the clock can bring it.
"""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from service.http.app import KEY_CACHE_CONNECTION
from service.http.appkeys import KEY_CACHE
from tests.helpers import (
    KEY_FIELDS,
    KEYS,
    activate,
    auth,
    connections_refused,
    create_key,
    expect,
    expect_error,
    list_keys,
    revoke,
    rfc3339,
    rotate_key,
    settle,
    table_counts,
    update_key,
    utc,
    verdict,
    view_key,
    wait_until,
)

OWNER = "acct_lifecycle"
EXPIRES_IN = 2.5  # seconds: long enough to verify the key before its instant on a busy machine
EVERYWHERE = 1.0  # SPEC: expired everywhere within 1 second of the instant
EXPIRED = (403, "key_expired")
NO_USAGE = {"requests": 0, "cost_chf": "0.000000000"}


def ahead(**delta) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


async def unchanged_by(client, admin, request) -> str:
    """Send a refused request; assert it changed no table and no key; its error message."""
    await settle(admin)
    before = (await table_counts(admin), await list_keys(client, OWNER))
    response = await request()
    message = await expect_error(response, 400, "invalid_request")
    assert (await table_counts(admin), await list_keys(client, OWNER)) == before
    return message


async def until_instant(moment: datetime) -> None:
    """Sleep until the wall clock has passed `moment` (nothing happens at an expiry to wait on)."""
    await asyncio.sleep(max(0.0, moment.timestamp() - time.time()) + 0.01)


async def is_expired_everywhere(client, key: dict) -> bool:
    listed = {k["id"]: k for k in await list_keys(client, OWNER)}[key["id"]]
    viewed = await view_key(client, OWNER, key["id"])
    return (listed["status"], viewed["status"], await verdict(client, key["key"])) == (
        "expired",
        "expired",
        EXPIRED,
    )


# The new fields on create


async def test_create_takes_an_expiry_with_a_zone_and_a_limit_and_answers_them_in_utc(client):
    expires_at = ahead(days=30).replace(microsecond=0)
    in_zurich = (expires_at + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"
    created = await create_key(client, OWNER, expires_at=in_zurich, monthly_spend_limit_chf="25")
    assert set(created) == KEY_FIELDS | {"key"}
    assert utc(created["expires_at"]) == expires_at and created["expires_at"].endswith("Z")
    assert created["monthly_spend_limit_chf"] == "25.000000000"
    assert created["status"] == "active"
    assert (created["rotated_from"], created["rotated_to"], created["revoked_reason"]) == (None,) * 3
    assert created["usage"]["this_month"] == NO_USAGE
    shown = {name: value for name, value in created.items() if name != "key"}
    assert await view_key(client, OWNER, created["id"]) == shown
    assert await list_keys(client, OWNER) == [shown]


@pytest.mark.parametrize("fields", [{}, {"expires_at": None, "monthly_spend_limit_chf": None}])
async def test_a_key_without_expiry_or_limit_has_every_field_null(client, fields):
    created = await create_key(client, OWNER, **fields)
    for key in (created, await view_key(client, OWNER, created["id"]), *await list_keys(client, OWNER)):
        assert set(key) - {"key"} == KEY_FIELDS
        assert key["expires_at"] is key["monthly_spend_limit_chf"] is None
        assert key["rotated_from"] is key["rotated_to"] is key["revoked_reason"] is None
        assert key["usage"]["this_month"] == NO_USAGE


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_at": timedelta(minutes=1)},
        {"expires_at": timedelta(days=1095, minutes=-1)},
        {"monthly_spend_limit_chf": "0.000000001"},
        {"monthly_spend_limit_chf": "1000000000"},
        {"monthly_spend_limit_chf": "1000000000.000000000"},
        {"monthly_spend_limit_chf": "007.5"},
    ],
    ids=str,
)
async def test_values_at_the_edges_of_the_rules_are_taken(client, fields):
    [(field, value)] = fields.items()
    if field == "expires_at":
        value = rfc3339(datetime.now(UTC) + value)
    created = await create_key(client, OWNER, **{field: value})
    if field == "expires_at":
        assert utc(created[field]) == utc(value)
    else:
        assert created[field] == f"{Decimal(value):.9f}"


# What the rules refuse, on create and on update. Each value a function, so "now" is the request's.

INVALID = {
    "expiry in the past": ("expires_at", lambda: rfc3339(ahead(minutes=-1))),
    "expiry now": ("expires_at", lambda: rfc3339(ahead())),
    "expiry over 1095 days ahead": ("expires_at", lambda: rfc3339(ahead(days=1095, minutes=1))),
    "expiry without a zone": ("expires_at", lambda: ahead(days=1).replace(tzinfo=None).isoformat()),
    "expiry not a time": ("expires_at", lambda: "next tuesday"),
    "expiry a date only": ("expires_at", lambda: ahead(days=2).date().isoformat()),
    "expiry a number": ("expires_at", lambda: int(ahead(days=1).timestamp())),
    "limit a JSON number": ("monthly_spend_limit_chf", lambda: 25),
    "limit a JSON fraction": ("monthly_spend_limit_chf", lambda: 25.5),
    "limit with an exponent": ("monthly_spend_limit_chf", lambda: "2.5e1"),
    "limit with a plus sign": ("monthly_spend_limit_chf", lambda: "+25"),
    "limit negative": ("monthly_spend_limit_chf", lambda: "-25"),
    "limit with 10 places": ("monthly_spend_limit_chf", lambda: "25.0000000001"),
    "limit 0": ("monthly_spend_limit_chf", lambda: "0"),
    "limit 0 with places": ("monthly_spend_limit_chf", lambda: "0.000000000"),
    "limit over 1000000000": ("monthly_spend_limit_chf", lambda: "1000000000.000000001"),
    "limit far over": ("monthly_spend_limit_chf", lambda: "1000000001"),
    "limit empty": ("monthly_spend_limit_chf", lambda: ""),
    "limit with a trailing point": ("monthly_spend_limit_chf", lambda: "25."),
    "limit with spaces": ("monthly_spend_limit_chf", lambda: " 25"),
}


@pytest.mark.parametrize("case", INVALID)
async def test_create_refuses_an_invalid_expiry_or_limit_naming_the_field(client, admin, case):
    field, value = INVALID[case]

    async def request():
        body = {"name": "Refused", field: value()}
        return await client.post(f"{KEYS}/create/", json=body, headers=auth(OWNER))

    assert field in await unchanged_by(client, admin, request)


@pytest.mark.parametrize("case", INVALID)
async def test_update_refuses_an_invalid_expiry_or_limit_naming_the_field(client, admin, case):
    field, value = INVALID[case]
    key = await create_key(client, OWNER, expires_at=rfc3339(ahead(days=7)), monthly_spend_limit_chf="5")
    message = await unchanged_by(
        client, admin, lambda: update_key(client, OWNER, key["id"], {field: value()})
    )
    assert field in message


async def test_update_checks_every_field_before_it_changes_any(client, admin):
    key = await create_key(client, OWNER)
    body = {"name": "Renamed", "expires_at": rfc3339(ahead(days=1)), "monthly_spend_limit_chf": "1e3"}
    message = await unchanged_by(client, admin, lambda: update_key(client, OWNER, key["id"], body))
    assert "monthly_spend_limit_chf" in message


@pytest.mark.parametrize(
    "body",
    [{}, {"name": "Renamed", "status": "revoked"}, {"expires": None}, {"rotated_to": None}],
    ids=["empty", "unknown beside a known one", "a near miss", "a read-only field"],
)
async def test_update_refuses_an_empty_body_and_unknown_fields(client, admin, body):
    key = await create_key(client, OWNER)
    await unchanged_by(client, admin, lambda: update_key(client, OWNER, key["id"], body))


# Update: any non-empty subset; null clears


async def test_update_changes_any_subset_and_null_clears_expiry_and_limit(client):
    key = await create_key(client, OWNER, "Original")
    week, month = ahead(days=7).replace(microsecond=0), ahead(days=30).replace(microsecond=0)
    steps = [
        ({"name": "Renamed"}, ("Renamed", None, None)),
        ({"expires_at": rfc3339(week)}, ("Renamed", week, None)),
        ({"monthly_spend_limit_chf": "12.5"}, ("Renamed", week, "12.500000000")),
        (
            {"name": "All three", "expires_at": rfc3339(month), "monthly_spend_limit_chf": "0.1"},
            ("All three", month, "0.100000000"),
        ),
        ({"expires_at": None}, ("All three", None, "0.100000000")),
        ({"monthly_spend_limit_chf": None}, ("All three", None, None)),
        ({"expires_at": rfc3339(week), "monthly_spend_limit_chf": "3"}, ("All three", week, "3.000000000")),
        ({"expires_at": None, "monthly_spend_limit_chf": None}, ("All three", None, None)),
    ]
    for body, expected in steps:
        updated = await expect(await update_key(client, OWNER, key["id"], body))
        assert set(updated) == KEY_FIELDS and updated["status"] == "active"
        expires_at = None if updated["expires_at"] is None else utc(updated["expires_at"])
        assert (updated["name"], expires_at, updated["monthly_spend_limit_chf"]) == expected, body
        assert await view_key(client, OWNER, key["id"]) == updated


BODIES_OF_EACH_FIELD = {
    "name": {"name": "Renamed"},
    "expires_at": {"expires_at": "FUTURE"},
    "expires_at cleared": {"expires_at": None},
    "monthly_spend_limit_chf": {"monthly_spend_limit_chf": "5"},
    "monthly_spend_limit_chf cleared": {"monthly_spend_limit_chf": None},
}


def body_of(case: str) -> dict:
    return {
        field: rfc3339(ahead(days=3)) if value == "FUTURE" else value
        for field, value in BODIES_OF_EACH_FIELD[case].items()
    }


async def refused_for_each_field(client, admin, key: dict, status: int, type_: str) -> None:
    before = (await table_counts(admin), await view_key(client, OWNER, key["id"]))
    for case in BODIES_OF_EACH_FIELD:
        await expect_error(await update_key(client, OWNER, key["id"], body_of(case)), status, type_)
    assert (await table_counts(admin), await view_key(client, OWNER, key["id"])) == before


async def test_updating_a_revoked_key_answers_409_key_revoked_for_every_field(client, admin):
    key = await create_key(client, OWNER, expires_at=rfc3339(ahead(days=3)), monthly_spend_limit_chf="9")
    await revoke(client, OWNER, key["id"])
    await refused_for_each_field(client, admin, key, 409, "key_revoked")


# Expiry at its instant


@pytest.mark.parametrize("set_by", ["create", "update"])
async def test_a_key_is_expired_everywhere_within_a_second_of_its_instant(client, admin, set_by):
    await activate(client, OWNER)
    if set_by == "create":
        key = await create_key(client, OWNER, expires_at=rfc3339(ahead(seconds=EXPIRES_IN)))
    else:
        key = await create_key(client, OWNER)
        body = {"expires_at": rfc3339(ahead(seconds=EXPIRES_IN))}
        key |= await expect(await update_key(client, OWNER, key["id"], body))
    instant = utc(key["expires_at"])
    assert await verdict(client, key["key"]) == (200, None)
    assert (await view_key(client, OWNER, key["id"]))["status"] == "active"
    assert time.time() < instant.timestamp(), "the machine was too slow to check the key before its expiry"

    await until_instant(instant)
    await wait_until(lambda: is_expired_everywhere(client, key), within=EVERYWHERE)
    expired = await view_key(client, OWNER, key["id"])
    assert (expired["revoked_at"], expired["revoked_reason"], utc(expired["expires_at"])) == (
        None,
        None,
        instant,
    )
    # An expired key is never brought back, nor rotated.
    await refused_for_each_field(client, admin, key, 409, "key_expired")
    await expect_error(await rotate_key(client, OWNER, key["id"]), 409, "key_expired")
    assert await is_expired_everywhere(client, key)


async def test_an_expired_key_no_longer_counts_toward_the_5_active_keys(client, admin):
    for n in range(4):
        await create_key(client, OWNER, f"Key {n}")
    expiring = await create_key(client, OWNER, "Expiring", expires_at=rfc3339(ahead(seconds=EXPIRES_IN)))
    before = await table_counts(admin)
    await expect_error(
        await client.post(f"{KEYS}/create/", json={"name": "Sixth"}, headers=auth(OWNER)),
        409,
        "key_limit_reached",
    )
    assert await table_counts(admin) == before

    await until_instant(utc(expiring["expires_at"]))

    async def sixth_created() -> bool:
        response = await client.post(f"{KEYS}/create/", json={"name": "Sixth"}, headers=auth(OWNER))
        await response.read()
        return response.status == 201

    await wait_until(sixth_created, within=EVERYWHERE)
    statuses = sorted(key["status"] for key in await list_keys(client, OWNER))
    assert statuses == ["active"] * 5 + ["expired"]
    await expect_error(
        await client.post(f"{KEYS}/create/", json={"name": "Seventh"}, headers=auth(OWNER)),
        409,
        "key_limit_reached",
    )


async def test_a_key_expiring_while_the_cache_listener_is_down_is_refused_at_its_instant(
    client, admin, server_url
):
    """The listener's connection is ended right before the instant, and the database refuses new
    connections until after it: the cache cannot hear, nor prove it is fresh, across the instant.
    Every verification sent after the instant must answer 403 key_expired, never 200."""
    await activate(client, OWNER)
    key = await create_key(client, OWNER, expires_at=rfc3339(ahead(seconds=EXPIRES_IN)))
    instant = utc(key["expires_at"]).timestamp()
    await wait_until(lambda: client.app[KEY_CACHE].fresh, within=5)
    assert await verdict(client, key["key"]) == (200, None)
    database = await admin.fetchval("SELECT current_database()")
    answers: list[tuple[float, tuple[int, str | None]]] = []  # (sent at, verdict)

    async def ask_until(end: float) -> None:
        while (sent := time.time()) < end:
            answers.append((sent, await verdict(client, key["key"])))

    async with connections_refused(server_url, database):
        await asyncio.sleep(max(0.0, instant - 0.3 - time.time()))
        ended = await admin.fetch(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = $1""",
            KEY_CACHE_CONNECTION,
        )
        assert [row[0] for row in ended] == [True], "the key cache's listening connection was not found"
        await ask_until(instant + 0.5)
        assert not client.app[KEY_CACHE].fresh, "the listener came back: the test proves nothing"
    await ask_until(instant + 1.5)  # and while the listener comes back

    after = [answer for sent, answer in answers if sent >= instant]
    assert after and set(after) == {EXPIRED}, after
    await wait_until(lambda: client.app[KEY_CACHE].fresh, within=5)
    assert await verdict(client, key["key"]) == EXPIRED


# Time travel


async def test_as_of_gives_the_new_fields_and_the_expired_status_as_they_stood(client, admin):
    key = await create_key(client, OWNER, expires_at=rfc3339(ahead(seconds=EXPIRES_IN)))
    at_create = datetime.now(UTC)
    limited = await expect(await update_key(client, OWNER, key["id"], {"monthly_spend_limit_chf": "7"}))
    after_limit = datetime.now(UTC)
    await until_instant(utc(key["expires_at"]) + timedelta(seconds=0.2))

    [then] = await list_keys(client, OWNER, as_of=rfc3339(at_create))
    assert (then["status"], then["monthly_spend_limit_chf"]) == ("active", None)
    assert utc(then["expires_at"]) == utc(key["expires_at"])
    [later] = await list_keys(client, OWNER, as_of=rfc3339(after_limit))
    assert (later["status"], later["monthly_spend_limit_chf"]) == ("active", "7.000000000")
    [expired] = await list_keys(client, OWNER, as_of=rfc3339(utc(key["expires_at"]) + timedelta(seconds=0.1)))
    assert expired == await view_key(client, OWNER, key["id"]) | {"usage": expired["usage"]}
    assert (expired["status"], expired["monthly_spend_limit_chf"]) == ("expired", "7.000000000")
    assert set(expired) == set(limited) == KEY_FIELDS
