"""Rotation (`POST …/{key_id}/rotate/`), the history of the new lifecycle events and time travel over
them (SPEC "Expiry, rotation, spend limits"), black-box over HTTP on a real PostgreSQL.
"""

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import (
    KEY_FIELDS,
    KEYS,
    activate,
    auth,
    create_key,
    expect,
    expect_error,
    key_history,
    key_path,
    list_keys,
    revoke,
    rfc3339,
    rotate_key,
    service_headers,
    settle,
    table_counts,
    update_key,
    utc,
    verdict,
    view_key,
    wait_until,
)

OWNER = "acct_rotating"
OTHER = "acct_someone_else"
UNKNOWN_KEY_ID = "key_0000000000000000000000"
DAY = 86_400
FORBIDDEN = (403, "forbidden")
EXPIRED = (403, "key_expired")
VALID = (200, None)


def counted_active(keys: list[dict]) -> list[dict]:
    """The keys the 5-key limit counts: status active and not rotated (SPEC)."""
    return [key for key in keys if key["status"] == "active" and key["rotated_to"] is None]


async def rotated(client, key: dict, body: dict | None = None, account: str = OWNER) -> dict:
    return await expect(await rotate_key(client, account, key["id"], body), 201)


async def refused_unchanged(client, admin, request, status: int, type_: str) -> str:
    """Send a refused request; assert its error and that it changed no table and no key."""
    await settle(admin)  # the projector and the tree writer, still folding earlier events, write tables
    before = (await table_counts(admin), await list_keys(client, OWNER))
    message = await expect_error(await request(), status, type_)
    assert (await table_counts(admin), await list_keys(client, OWNER)) == before
    return message


def between(moment: str, earliest: datetime, latest: datetime) -> bool:
    return earliest <= utc(moment) <= latest


# A rotation and its grace period


@pytest.mark.parametrize("body", [None, {}, {"grace_period_seconds": DAY}], ids=["no body", "{}", "explicit"])
async def test_rotation_gives_a_new_key_and_the_old_one_a_day_of_grace_by_default(client, body):
    await activate(client, OWNER)
    old = await create_key(
        client,
        OWNER,
        "Backend",
        expires_at=rfc3339(datetime.now(UTC) + timedelta(days=30)),
        monthly_spend_limit_chf="25",
    )
    started = datetime.now(UTC)
    new = await rotated(client, old, body)
    answered = datetime.now(UTC)

    assert set(new) == KEY_FIELDS | {"key"}
    assert new["key"].startswith("sk-") and new["key"] != old["key"]
    assert new["masked_key"] == "sk-***..." + new["key"][-4:]
    assert new["id"] != old["id"]
    assert (new["name"], new["monthly_spend_limit_chf"], new["expires_at"]) == (
        "Backend",
        "25.000000000",
        None,
    )
    assert (new["rotated_from"], new["rotated_to"], new["status"]) == (old["id"], None, "active")
    assert new["revoked_at"] is new["revoked_reason"] is None
    assert new["usage"]["this_month"] == {"requests": 0, "cost_chf": "0.000000000"}

    old_now = await view_key(client, OWNER, old["id"])
    assert (old_now["rotated_to"], old_now["rotated_from"], old_now["status"]) == (new["id"], None, "active")
    assert between(old_now["expires_at"], started + timedelta(seconds=DAY), answered + timedelta(seconds=DAY))
    assert old_now["revoked_reason"] is None
    assert [key["id"] for key in await list_keys(client, OWNER)] == [new["id"], old["id"]]
    assert await verdict(client, old["key"]) == VALID  # during the grace period both verify
    assert await verdict(client, new["key"]) == VALID


async def test_a_chosen_grace_sets_the_old_keys_expiry_unless_its_own_is_earlier(client):
    later = await create_key(
        client, OWNER, "Later", expires_at=rfc3339(datetime.now(UTC) + timedelta(days=2))
    )
    started = datetime.now(UTC)
    await rotated(client, later, {"grace_period_seconds": 3600})
    answered = datetime.now(UTC)
    viewed = await view_key(client, OWNER, later["id"])
    assert between(viewed["expires_at"], started + timedelta(hours=1), answered + timedelta(hours=1))

    soon = await create_key(
        client, OWNER, "Soon", expires_at=rfc3339(datetime.now(UTC) + timedelta(minutes=10))
    )
    await rotated(client, soon, {"grace_period_seconds": 604_800})  # the longest grace there is
    assert (await view_key(client, OWNER, soon["id"]))["expires_at"] == soon["expires_at"]


async def test_after_a_short_grace_the_old_key_answers_403_key_expired_and_the_new_one_200(client):
    await activate(client, OWNER)
    old = await create_key(client, OWNER)
    new = await rotated(client, old, {"grace_period_seconds": 2})
    ends = utc((await view_key(client, OWNER, old["id"]))["expires_at"])
    assert (await verdict(client, old["key"]), await verdict(client, new["key"])) == (VALID, VALID)
    assert time.time() < ends.timestamp(), "the machine was too slow to verify during the grace"

    await asyncio.sleep(max(0.0, ends.timestamp() - time.time()) + 0.01)
    await wait_until(lambda: is_(verdict(client, old["key"]), EXPIRED), within=1.0)
    assert (await view_key(client, OWNER, old["id"]))["status"] == "expired"
    assert await verdict(client, new["key"]) == VALID
    assert [key["status"] for key in await list_keys(client, OWNER)] == ["active", "expired"]


async def is_(answer, expected) -> bool:
    return await answer == expected


async def test_a_grace_of_0_revokes_the_old_key_at_once_with_reason_rotated(client):
    await activate(client, OWNER)
    old = await create_key(client, OWNER)
    new = await rotated(client, old, {"grace_period_seconds": 0})
    viewed = await view_key(client, OWNER, old["id"])
    assert (viewed["status"], viewed["revoked_reason"], viewed["rotated_to"]) == (
        "revoked",
        "rotated",
        new["id"],
    )
    assert viewed["revoked_at"] is not None
    assert await verdict(client, old["key"]) == FORBIDDEN  # this process's cache knows it already
    assert await verdict(client, new["key"]) == VALID
    [revoked] = [
        event for event in await key_history(client, OWNER, old["id"]) if event["type"] == "ApiKeyRevoked"
    ]
    assert revoked["data"]["reason"] == "rotated"


@pytest.mark.parametrize(
    "body",
    [
        {"grace_period_seconds": -1},
        {"grace_period_seconds": 604_801},
        {"grace_period_seconds": "10"},
        {"grace_period_seconds": 1.5},
        {"grace_period_seconds": None},
        {"grace_period_seconds": True},
        {"grace_period_seconds": 10, "name": "Renamed"},
    ],
    ids=str,
)
async def test_a_grace_out_of_range_or_of_the_wrong_type_is_400(client, admin, body):
    key = await create_key(client, OWNER)
    message = await refused_unchanged(
        client, admin, lambda: rotate_key(client, OWNER, key["id"], body), 400, "invalid_request"
    )
    assert "grace_period_seconds" in message or "name" in message


# Rotation and the 5 active keys


async def test_rotation_works_at_5_active_keys_and_the_count_stays_5(client, admin):
    keys = [await create_key(client, OWNER, f"Key {n}") for n in range(5)]
    new = await rotated(client, keys[2])
    listed = await list_keys(client, OWNER)
    assert len(listed) == 6 and len(counted_active(listed)) == 5
    assert new["id"] in {key["id"] for key in counted_active(listed)}
    await refused_unchanged(
        client,
        admin,
        lambda: client.post(f"{KEYS}/create/", json={"name": "Sixth"}, headers=auth(OWNER)),
        409,
        "key_limit_reached",
    )


# What cannot be rotated


async def test_rotating_a_revoked_key_is_409_key_revoked(client, admin):
    key = await create_key(client, OWNER)
    await revoke(client, OWNER, key["id"])
    await refused_unchanged(client, admin, lambda: rotate_key(client, OWNER, key["id"]), 409, "key_revoked")


@pytest.mark.parametrize("grace", [DAY, 0])
async def test_rotating_a_key_again_is_409_key_rotated_naming_its_replacement(client, admin, grace):
    key = await create_key(client, OWNER)
    new = await rotated(client, key, {"grace_period_seconds": grace})
    message = await refused_unchanged(
        client, admin, lambda: rotate_key(client, OWNER, key["id"]), 409, "key_rotated"
    )
    assert new["id"] in message, message


@pytest.mark.parametrize("whose", ["another account's", "unknown"])
async def test_rotating_another_accounts_key_or_an_unknown_id_is_404(client, admin, whose):
    theirs = await create_key(client, OTHER)
    key_id = theirs["id"] if whose == "another account's" else UNKNOWN_KEY_ID
    await refused_unchanged(client, admin, lambda: rotate_key(client, OWNER, key_id), 404, "not_found")
    assert (await view_key(client, OTHER, theirs["id"]))["rotated_to"] is None


# Concurrency: real HTTP requests at the same moment


async def test_50_parallel_rotations_of_one_key_give_exactly_one_new_key(client, admin):
    key = await create_key(client, OWNER)
    responses = await asyncio.gather(*(rotate_key(client, OWNER, key["id"]) for _ in range(50)))
    statuses = sorted(response.status for response in responses)
    assert statuses == [201] + [409] * 49, statuses
    [winner] = [await response.json() for response in responses if response.status == 201]
    for response in responses:
        if response.status == 409:
            message = await expect_error(response, 409, "key_rotated")
            assert winner["id"] in message
    rotations = await admin.fetchval(
        "SELECT count(*) FROM events WHERE type = 'ApiKeyRotated' AND data->>'key_id' = $1", key["id"]
    )
    assert rotations == 1
    listed = await list_keys(client, OWNER)
    assert [k["id"] for k in listed] == [winner["id"], key["id"]]


async def test_50_parallel_creates_racing_5_rotations_never_exceed_5_counted_active_keys(client, admin):
    keys = [await create_key(client, OWNER, f"Key {n}") for n in range(4)]
    creates = [
        (
            "create",
            lambda n=n: client.post(f"{KEYS}/create/", json={"name": f"Racer {n}"}, headers=auth(OWNER)),
        )
        for n in range(50)
    ]
    rotations = [("rotate", lambda key=key: rotate_key(client, OWNER, key["id"])) for key in [*keys, keys[0]]]
    requests = creates + rotations
    random.shuffle(requests)
    responses = await asyncio.gather(*(send() for _, send in requests))
    outcomes = {"create": [], "rotate": []}
    for (kind, _), response in zip(requests, responses, strict=True):
        body = await response.json()
        outcomes[kind].append((response.status, body["error"]["type"] if "error" in body else None))

    # 4 keys and 1 create fill the 5; a rotation neither needs a place nor frees one.
    assert sorted(outcomes["create"], key=str) == sorted(
        [(201, None)] + [(409, "key_limit_reached")] * 49, key=str
    )
    assert sorted(outcomes["rotate"], key=str) == sorted([(201, None)] * 4 + [(409, "key_rotated")], key=str)
    listed = await list_keys(client, OWNER)
    assert len(listed) == 4 + 1 + 4
    assert len(counted_active(listed)) == 5
    in_the_table = await admin.fetchval(
        """SELECT count(*) FROM api_keys
           WHERE account_id = $1 AND status = 'active' AND rotated_to IS NULL
             AND (expires_at IS NULL OR expires_at > now())""",
        OWNER,
    )
    assert in_the_table == 5


# History and time travel


async def test_history_shows_expiry_limit_rotation_and_revocation_with_its_reason(client):
    key = await create_key(client, OWNER)
    await expect(
        await update_key(
            client, OWNER, key["id"], {"expires_at": rfc3339(datetime.now(UTC) + timedelta(days=9))}
        )
    )
    await expect(await update_key(client, OWNER, key["id"], {"monthly_spend_limit_chf": "25"}))
    await expect(await update_key(client, OWNER, key["id"], {"monthly_spend_limit_chf": None}))
    new = await rotated(client, key, {"grace_period_seconds": 600})
    await revoke(client, OWNER, key["id"])  # during its grace period

    events = await key_history(client, OWNER, key["id"])
    assert [event["type"] for event in events] == [
        "ApiKeyCreated",
        "ApiKeyExpirySet",
        "ApiKeySpendLimitSet",
        "ApiKeySpendLimitSet",
        "ApiKeyRotated",
        "ApiKeyRevoked",
    ]
    _, expiry, limit, cleared, rotation, revocation = (event["data"] for event in events)
    assert (expiry["previous_expires_at"], utc(expiry["expires_at"]) > datetime.now(UTC)) == (None, True)
    assert (limit["monthly_spend_limit_chf"], limit["previous_monthly_spend_limit_chf"]) == (
        "25.000000000",
        None,
    )
    assert (cleared["monthly_spend_limit_chf"], cleared["previous_monthly_spend_limit_chf"]) == (
        None,
        "25.000000000",
    )
    assert (rotation["new_key_id"], rotation["grace_period_seconds"]) == (new["id"], 600)
    assert rotation["expires_at"] == (await view_key(client, OWNER, key["id"]))["expires_at"]
    assert revocation["reason"] == "user"
    [created] = await key_history(client, OWNER, new["id"])
    assert (created["type"], created["data"]["rotated_from"]) == ("ApiKeyCreated", key["id"])
    assert (await view_key(client, OWNER, key["id"]))["revoked_reason"] == "user"


async def test_as_of_gives_the_rotation_links_as_they_stood_before_and_after(client):
    old = await create_key(client, OWNER, monthly_spend_limit_chf="3")
    before = datetime.now(UTC)
    new = await rotated(client, old, {"grace_period_seconds": 3600})
    after = datetime.now(UTC)

    [then] = await list_keys(client, OWNER, as_of=rfc3339(before))
    assert (then["id"], then["rotated_to"], then["expires_at"], then["status"]) == (
        old["id"],
        None,
        None,
        "active",
    )
    now_listed = await list_keys(client, OWNER, as_of=rfc3339(after))
    assert [(k["id"], k["rotated_from"], k["rotated_to"]) for k in now_listed] == [
        (new["id"], old["id"], None),
        (old["id"], None, new["id"]),
    ]
    assert now_listed[0]["monthly_spend_limit_chf"] == "3.000000000"
    assert now_listed[1]["expires_at"] == (await view_key(client, OWNER, old["id"]))["expires_at"]


# The full key of a rotation


async def test_the_rotated_in_key_is_nowhere_but_the_rotate_answer(client, admin):
    old = await create_key(client, OWNER)
    new = await rotated(client, old, {"grace_period_seconds": 60})
    secret = new["key"]
    answers = [
        await client.get(f"{KEYS}/", headers=auth(OWNER)),
        await client.get(f"{KEYS}/", params={"as_of": rfc3339(datetime.now(UTC))}, headers=auth(OWNER)),
        *[await client.get(key_path(key["id"]), headers=auth(OWNER)) for key in (old, new)],
        *[await client.get(key_path(key["id"]) + "events/", headers=auth(OWNER)) for key in (old, new)],
        await client.get("/api/v1/audit/events", headers=service_headers()),
    ]
    for response in answers:
        text = await response.text()
        assert response.status == 200, text
        assert secret not in text and secret[3:] not in text
    tables = await admin.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    for row in tables:
        dump = await admin.fetchval(
            f"SELECT coalesce(string_agg(t::text, '\n'), '') FROM public.\"{row[0]}\" t"
        )
        assert secret[3:] not in dump, f"the full key is stored in {row[0]}"
