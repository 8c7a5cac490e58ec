"""A key's monthly spend limit, enforced at verification (SPEC "Expiry, rotation, spend limits").

Real HTTP through the app with its projector and key cache, on a real PostgreSQL: usage goes in
through POST /api/v1/usage/, the projector folds it into the monthly spend, and the key cache
answers 402 from memory.
"""

import itertools
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from service.app.spend import month_of
from service.http.app import KEY_CACHE_CONNECTION
from service.http.appkeys import KEY_CACHE
from tests.helpers import (
    KEYS,
    activate,
    auth,
    connections_refused,
    deactivate,
    expect,
    expect_error,
    key_path,
    send_usage,
    usage_event,
    verify,
    wait_until,
)

OWNER = "acct_spender"
_requests = itertools.count()


async def limited_key(client, limit: str | None, **fields) -> dict:
    body = {"name": "Metered", "monthly_spend_limit_chf": limit, **fields}
    return await expect(await client.post(f"{KEYS}/create/", json=body, headers=auth(OWNER)), 201)


async def spend(client, key: dict, *costs: str, occurred_at: datetime | None = None) -> None:
    events = [usage_event(key["id"], f"req-{next(_requests)}", cost, occurred_at) for cost in costs]
    await expect(await send_usage(client, events), 202)


async def set_limit(client, key: dict, limit: str | None) -> dict:
    body = {"monthly_spend_limit_chf": limit}
    return await expect(await client.patch(key_path(key["id"]) + "update/", json=body, headers=auth(OWNER)))


async def verdict(client, key: dict) -> tuple[int, str | None]:
    response = await verify(client, key["key"])
    body = await response.json()
    return response.status, body.get("error", {}).get("type")


async def test_usage_that_reaches_the_limit_stops_the_key_within_2_seconds(client):
    await activate(client, OWNER)
    key = await limited_key(client, "0.0003")
    assert key["monthly_spend_limit_chf"] == "0.000300000"
    await spend(client, key, "0.000150")
    assert await verdict(client, key) == (200, None)

    await spend(client, key, "0.000150")  # the month's cost is now exactly the limit
    waited = await wait_until(lambda: _is(client, key, (402, "spend_limit_reached")), within=2.0)
    message = await expect_error(await verify(client, key["key"]), 402, "spend_limit_reached")
    assert "CHF 0.0003" in message, message
    assert waited <= 2.0


async def test_raising_clearing_and_lowering_the_limit_lift_and_restore_the_refusal(client):
    await activate(client, OWNER)
    key = await limited_key(client, "0.0001")
    await spend(client, key, "0.000100")
    await wait_until(lambda: _is(client, key, (402, "spend_limit_reached")), within=2.0)

    await set_limit(client, key, "1")
    await wait_until(lambda: _is(client, key, (200, None)), within=1.0)
    lowered = await set_limit(client, key, "0.00005")  # below what the month has cost already
    assert lowered["monthly_spend_limit_chf"] == "0.000050000"
    await wait_until(lambda: _is(client, key, (402, "spend_limit_reached")), within=2.0)
    cleared = await set_limit(client, key, None)
    assert cleared["monthly_spend_limit_chf"] is None
    await wait_until(lambda: _is(client, key, (200, None)), within=1.0)


async def test_no_usage_is_lost_or_refused_because_of_a_limit(client):
    await activate(client, OWNER)
    key = await limited_key(client, "0.0001")
    await spend(client, key, "0.000100")
    await wait_until(lambda: _is(client, key, (402, "spend_limit_reached")), within=2.0)
    await spend(client, key, "0.000200", "0.000300")  # in flight when the limit was reached: counted

    async def counted() -> bool:
        viewed = await expect(await client.get(key_path(key["id"]), headers=auth(OWNER)))
        return viewed["usage"]["this_month"] == {"requests": 3, "cost_chf": "0.000600000"}

    await wait_until(counted, within=2.0)


async def test_last_months_usage_does_not_count_toward_this_months_limit(client):
    await activate(client, OWNER)
    key = await limited_key(client, "0.0001")
    last_month = datetime.combine(month_of(datetime.now(UTC).timestamp()), datetime.min.time(), UTC)
    await spend(client, key, "0.5", occurred_at=last_month - timedelta(hours=1))

    async def projected() -> bool:
        viewed = await expect(await client.get(key_path(key["id"]), headers=auth(OWNER)))
        return viewed["usage"]["total_cost_chf"] == "0.500000000"

    await wait_until(projected, within=2.0)
    viewed = await expect(await client.get(key_path(key["id"]), headers=auth(OWNER)))
    assert viewed["usage"]["this_month"] == {"requests": 0, "cost_chf": "0.000000000"}
    assert await verdict(client, key) == (200, None)


async def test_an_expired_or_unsubscribed_key_is_refused_for_that_first(client):
    await activate(client, OWNER)
    soon = datetime.now(UTC) + timedelta(seconds=2)
    key = await limited_key(client, "0.0001", expires_at=soon.isoformat())
    await spend(client, key, "0.000100")
    await wait_until(lambda: _is(client, key, (402, "spend_limit_reached")), within=2.0)
    await deactivate(client, OWNER)
    assert await verdict(client, key) == (402, "subscription_required")
    await wait_until(lambda: _is(client, key, (403, "key_expired")), within=4.0)


async def test_the_database_answers_the_same_when_the_key_cache_cannot_prove_it_is_fresh(
    client, admin, server_url
):
    await activate(client, OWNER)
    key = await limited_key(client, "0.0001")
    await spend(client, key, "0.000100")
    await wait_until(lambda: _is(client, key, (402, "spend_limit_reached")), within=2.0)
    from_database = {"outcome": "over_limit", "source": "database"}
    before = REGISTRY.get_sample_value("keyledger_verifications_total", from_database) or 0
    # The listener is cut off and cannot come back while new connections are refused; the pool's
    # open connections still answer, so verification asks the database.
    async with connections_refused(server_url, await admin.fetchval("SELECT current_database()")):
        await admin.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = $1""",
            KEY_CACHE_CONNECTION,
        )
        await wait_until(lambda: not client.server.app[KEY_CACHE].fresh, within=2.0)
        assert await verdict(client, key) == (402, "spend_limit_reached")
    assert (REGISTRY.get_sample_value("keyledger_verifications_total", from_database) or 0) > before


async def _is(client, key: dict, expected: tuple[int, str | None]) -> bool:
    return await verdict(client, key) == expected
