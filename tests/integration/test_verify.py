"""Key verification (`/api/v1/auth/verify`) and the subscription switch, end to end on PostgreSQL.

Verification answers from each process's in-process key cache, which follows lifecycle changes
through LISTEN/NOTIFY, so a change reaches a cache a little after the change was answered. Tests
that are not about that delay wait for it with `wait_until` (never with a fixed sleep); the tests
about it measure it.
"""

import asyncio
import contextlib
import time

import asyncpg
import pytest

from events import apikey
from service.http.app import KEY_CACHE_CONNECTION, create_app
from service.http.appkeys import KEY_CACHE
from tests.helpers import (
    VERIFY,
    activate,
    auth,
    connections_refused,
    create_key,
    deactivate,
    expect,
    expect_error,
    revoke,
    service_headers,
    subscription_path,
    verify,
    verify_status,
    wait_until,
)

ACCOUNT = "acct_verify"
FORBIDDEN = {"error": {"message": "Invalid or revoked API key", "type": "forbidden"}}
SUBSCRIPTION_REQUIRED = {
    "error": {
        "message": "Active subscription required to access this service",
        "type": "subscription_required",
    }
}
PROPAGATION = 1.0  # seconds a lifecycle change may take to reach another process's cache
SETTLE = 5.0  # how long tests that are not about that delay wait for it


async def answers(client, secret: str, status: int) -> bool:
    return await verify_status(client, secret) == status


async def verified_key(client, account: str = ACCOUNT) -> dict:
    """A new key of an account with an active subscription, once this process admits it."""
    await activate(client, account)
    key = await create_key(client, account)
    await wait_until(lambda: answers(client, key["key"], 200), SETTLE)
    return key


async def expect_refused(client, secret: str, method: str = "GET") -> None:
    response = await verify(client, secret, method)
    assert response.status == 403, await response.text()
    assert await response.json() == FORBIDDEN
    assert "X-Keyledger-Key-Id" not in response.headers
    assert "X-Keyledger-Account-Id" not in response.headers


def with_wrong_checksum(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + ("A" if last != "A" else "B")


def with_changed_body(secret: str) -> str:
    """One character of the random part changed, the checksum left as it was."""
    at = len(apikey.PREFIX) + 5
    return secret[:at] + ("a" if secret[at] != "a" else "b") + secret[at + 1 :]


# Valid keys


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_valid_key_with_an_active_subscription_passes(client, method):
    key = await verified_key(client)
    response = await verify(client, key["key"], method)
    assert await expect(response, 200) == {"valid": True, "key_id": key["id"], "account_id": ACCOUNT}
    assert response.headers["X-Keyledger-Key-Id"] == key["id"]
    assert response.headers["X-Keyledger-Account-Id"] == ACCOUNT


async def test_each_key_is_answered_with_its_own_id_and_account(client):
    keys = {account: await verified_key(client, account) for account in ("acct_a", "acct_b")}
    for account, key in keys.items():
        body = await expect(await verify(client, key["key"]))
        assert (body["key_id"], body["account_id"]) == (key["id"], account)


# Subscriptions


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_valid_key_of_an_account_without_a_subscription_answers_402(client, method):
    key = await create_key(client, "acct_never_subscribed")
    # Until the cache has the key it answers 403; wait for the verdict about the subscription.
    await wait_until(lambda: answers(client, key["key"], 402), SETTLE)
    response = await verify(client, key["key"], method)
    assert response.status == 402
    assert await response.json() == SUBSCRIPTION_REQUIRED
    assert "X-Keyledger-Key-Id" not in response.headers


async def test_a_subscription_turned_off_answers_402_and_on_again_200(client):
    key = await verified_key(client)
    await deactivate(client, ACCOUNT)
    await wait_until(lambda: answers(client, key["key"], 402), SETTLE)
    assert await (await verify(client, key["key"])).json() == SUBSCRIPTION_REQUIRED
    await activate(client, ACCOUNT, plan="team")
    await wait_until(lambda: answers(client, key["key"], 200), SETTLE)


async def test_the_subscription_endpoint_answers_the_state(client, admin):
    body = await expect(
        await client.put(
            subscription_path(ACCOUNT), json={"status": "active", "plan": "pro"}, headers=service_headers()
        )
    )
    assert body == {"account_id": ACCOUNT, "status": "active", "plan": "pro"}
    row = await admin.fetchrow("SELECT status, plan FROM subscriptions WHERE account_id = $1", ACCOUNT)
    assert dict(row) == {"status": "active", "plan": "pro"}


@pytest.mark.parametrize("status", ["active", "inactive"])
async def test_the_same_subscription_put_twice_appends_one_event(client, admin, status):
    if status == "inactive":
        await activate(client, ACCOUNT)
    for _ in range(2):
        await expect(
            await client.put(
                subscription_path(ACCOUNT), json={"status": status, "plan": "pro"}, headers=service_headers()
            )
        )
    counts = dict(
        await admin.fetch(
            "SELECT type, count(*) FROM events WHERE stream_id = $1 GROUP BY type", f"account-{ACCOUNT}"
        )
    )
    expected = {"SubscriptionActivated": 1}
    if status == "inactive":
        expected["SubscriptionDeactivated"] = 1
    assert counts == expected


SUBSCRIPTION_ERRORS = {
    "no service token": ({}, {"status": "active", "plan": "pro"}, 401, "authentication_required"),
    "wrong service token": (
        service_headers("not-the-service-token"),
        {"status": "active", "plan": "pro"},
        401,
        "invalid_token",
    ),
    "an account JWT": (auth(ACCOUNT), {"status": "active", "plan": "pro"}, 401, "invalid_token"),
    "Basic credentials": (
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"status": "active", "plan": "pro"},
        401,
        "authentication_required",
    ),
    "unknown status": (service_headers(), {"status": "paused", "plan": "pro"}, 400, "invalid_request"),
    "status as a boolean": (service_headers(), {"status": True, "plan": "pro"}, 400, "invalid_request"),
    "no status": (service_headers(), {"plan": "pro"}, 400, "invalid_request"),
    "unknown field": (
        service_headers(),
        {"status": "active", "plan": "pro", "seats": 3},
        400,
        "invalid_request",
    ),
}


@pytest.mark.parametrize(
    ("headers", "body", "status", "type_"), SUBSCRIPTION_ERRORS.values(), ids=SUBSCRIPTION_ERRORS.keys()
)
async def test_the_subscription_endpoint_refuses_bad_requests_and_changes_nothing(
    client, admin, headers, body, status, type_
):
    response = await client.put(subscription_path(ACCOUNT), json=body, headers=headers)
    await expect_error(response, status, type_)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await admin.fetchval("SELECT count(*) FROM events") == 0
    assert await admin.fetchval("SELECT count(*) FROM subscriptions") == 0


# Refused keys


async def test_a_revoked_key_is_refused(client):
    key = await verified_key(client)
    await revoke(client, ACCOUNT, key["id"])
    await wait_until(lambda: answers(client, key["key"], 403), SETTLE)
    for method in ("GET", "POST"):
        await expect_refused(client, key["key"], method)


BAD_KEYS = {
    "unknown but well-formed": lambda valid: apikey.generate(),
    "wrong checksum": with_wrong_checksum,
    "body changed, checksum kept": with_changed_body,
    "truncated": lambda valid: valid[:-1],
    "one character more": lambda valid: valid + "0",
    "no sk- prefix": lambda valid: valid[len(apikey.PREFIX) :],
    "other prefix": lambda valid: "pk-" + valid[len(apikey.PREFIX) :],
    "not base62": lambda valid: valid[:10] + "-" + valid[11:],
    "non-ASCII": lambda valid: valid[:10] + "é" + valid[11:],
    "short nonsense": lambda valid: "sk-abc",
    "an account JWT": lambda valid: auth(ACCOUNT)["Authorization"].removeprefix("Bearer "),
}


@pytest.mark.parametrize("make_key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
async def test_an_invalid_or_malformed_key_is_refused(client, make_key):
    valid = await verified_key(client)  # the account is subscribed: only the key can be at fault
    bad = make_key(valid["key"])
    assert bad != valid["key"]
    for method in ("GET", "POST"):
        await expect_refused(client, bad, method)
    assert await answers(client, valid["key"], 200)


def test_the_malformed_examples_are_indeed_malformed_and_the_unknown_one_well_formed():
    valid = apikey.generate()
    for name, make_key in BAD_KEYS.items():
        well_formed = apikey.is_well_formed(make_key(valid))
        assert well_formed == (name == "unknown but well-formed"), name


AUTHORIZATION_HEADERS = {
    "no header": None,
    "Basic": "Basic dXNlcjpwYXNz",
    "Bearer without a token": "Bearer ",
    "the key without a scheme": "KEY",
    "Token scheme": "Token KEY",
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("authorization", AUTHORIZATION_HEADERS.values(), ids=AUTHORIZATION_HEADERS.keys())
async def test_no_bearer_credentials_answer_401(client, authorization, method):
    key = await verified_key(client)
    headers = {} if authorization is None else {"Authorization": authorization.replace("KEY", key["key"])}
    response = await client.request(method, VERIFY, headers=headers)
    await expect_error(response, 401, "authentication_required")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "X-Keyledger-Key-Id" not in response.headers


# Several processes on one database


@pytest.fixture
async def two_instances(aiohttp_client, settings):
    """Two service processes (apps with their own caches, pools and listeners) on one database."""
    return await aiohttp_client(create_app(settings)), await aiohttp_client(create_app(settings))


async def test_a_key_revoked_through_one_instance_is_refused_by_another_within_a_second(two_instances):
    a, b = two_instances
    key = await verified_key(a)
    await wait_until(lambda: answers(b, key["key"], 200), SETTLE)
    await revoke(a, ACCOUNT, key["id"])
    elapsed = await wait_until(lambda: answers(b, key["key"], 403), within=5, interval=0.02)
    assert elapsed < PROPAGATION, f"instance B let the revoked key through for {elapsed:.3f} s"
    await expect_refused(b, key["key"])


async def test_a_subscription_turned_off_through_one_instance_answers_402_on_another_within_a_second(
    two_instances,
):
    a, b = two_instances
    key = await verified_key(a)
    await wait_until(lambda: answers(b, key["key"], 200), SETTLE)
    await deactivate(a, ACCOUNT)
    elapsed = await wait_until(lambda: answers(b, key["key"], 402), within=5, interval=0.02)
    assert elapsed < PROPAGATION, f"instance B served the unsubscribed account for {elapsed:.3f} s"
    assert await (await verify(b, key["key"])).json() == SUBSCRIPTION_REQUIRED


async def test_a_key_created_through_one_instance_passes_on_another_within_a_second(two_instances):
    a, b = two_instances
    await activate(a, ACCOUNT)
    await wait_until(lambda: b.app[KEY_CACHE].subscribed(ACCOUNT), SETTLE)
    key = await create_key(a, ACCOUNT)
    elapsed = await wait_until(lambda: answers(b, key["key"], 200), within=5, interval=0.02)
    assert elapsed < PROPAGATION


# The cache's LISTEN connection


async def key_cache_backends(admin, waiting_on_a_lock: bool = False) -> list[int]:
    """The backend of the key cache's listening connection, by its application_name (pool connections
    run the same catch-up reads after a command of their process, so the query text does not tell)."""
    rows = await admin.fetch(
        """SELECT pid FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $2
             AND (NOT $1 OR wait_event_type = 'Lock')""",
        waiting_on_a_lock,
        KEY_CACHE_CONNECTION,
    )
    return [row["pid"] for row in rows]


async def test_a_key_revoked_right_after_the_listener_was_killed_is_never_let_through(client, admin):
    cache = client.app[KEY_CACHE]
    key = await verified_key(client)
    other = await create_key(client, ACCOUNT, "Still valid")
    await wait_until(lambda: answers(client, other["key"], 200), SETTLE)
    [listener] = await key_cache_backends(admin)

    assert await admin.fetchval("SELECT pg_terminate_backend($1)", listener)
    await revoke(client, ACCOUNT, key["id"])  # right away, while the cache reconnects
    revoked_at = time.monotonic()

    # Ask as often as the event loop allows, from several callers, until the cache has a new
    # listener and a fresh view, and for half a second more: not one answer may be a 200.
    statuses: list[tuple[float, int]] = []  # (seconds since the revocation was answered, status)
    recovered_at: float | None = None

    async def recovered() -> bool:
        backends = await key_cache_backends(admin)
        return cache.fresh and len(backends) == 1 and backends != [listener]

    async def watch_recovery() -> None:
        nonlocal recovered_at
        await wait_until(recovered, within=10, interval=0.005)
        recovered_at = time.monotonic()

    async def poll() -> None:
        while recovered_at is None or time.monotonic() - recovered_at < 0.5:
            status = await verify_status(client, key["key"])
            statuses.append((time.monotonic() - revoked_at, status))

    await asyncio.gather(watch_recovery(), *(poll() for _ in range(4)))

    passed = [round(after, 4) for after, status in statuses if status == 200]
    assert statuses and not passed, (
        f"{len(passed)} of {len(statuses)} answers let the revoked key through, "
        f"{passed[0]:.4f} to {passed[-1]:.4f} s after its revocation was answered"
    )
    assert {status for _, status in statuses} == {403}
    assert cache.fresh
    await expect_refused(client, key["key"])
    await expect(await verify(client, other["key"]))
    # The new listener follows changes again.
    await deactivate(client, ACCOUNT)
    await wait_until(lambda: answers(client, other["key"], 402), SETTLE)


async def test_a_revocation_missed_while_not_listening_is_not_served_while_the_cache_catches_up(
    client, admin, server_url, database_url
):
    """The cache must not call itself fresh before it has caught up on what it could not hear.

    The listener is killed while the database refuses new connections, so the cache stays deaf
    while the key is revoked. Then connections are allowed again while a lock on api_keys holds
    the cache's catch-up read: the cache listens again, but until that read returns it has not
    seen the revocation. Whatever it answers meanwhile (the database's verdict, or nothing while
    the lock blocks that read too), it must not let the revoked key through.
    """
    cache = client.app[KEY_CACHE]
    key = await verified_key(client)
    locker = await asyncpg.connect(database_url)  # opened while connections are still allowed
    lock = locker.transaction()
    try:
        async with connections_refused(server_url, await admin.fetchval("SELECT current_database()")):
            [listener] = await key_cache_backends(admin)
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", listener)
            await wait_until(lambda: not cache.fresh, within=2)
            await revoke(client, ACCOUNT, key["id"])  # through a pool connection that stays open
            await expect_refused(client, key["key"])  # the database answers while the cache is deaf
            await lock.start()
            await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        try:
            await wait_until(lambda: key_cache_backends(admin, waiting_on_a_lock=True), within=5)
            answered = []
            for _ in range(3):
                try:
                    answered.append(await asyncio.wait_for(verify_status(client, key["key"]), 0.2))
                except TimeoutError:
                    answered.append("waits for the database")
            assert 200 not in answered, f"the revoked key passed from the stale cache: {answered}"
        finally:
            await lock.rollback()
    finally:
        await locker.close()
    await wait_until(lambda: cache.fresh, within=5)
    await expect_refused(client, key["key"])


# Without its database


@contextlib.asynccontextmanager
async def cut_off(client, admin, server_url: str):
    """The service loses every database connection and cannot open new ones until the block ends."""
    async with connections_refused(server_url, await admin.fetchval("SELECT current_database()")):
        await admin.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()"""
        )
        await wait_until(lambda: not client.app[KEY_CACHE].fresh, within=5)
        yield


async def test_a_malformed_key_is_refused_without_a_database_lookup(client, admin, server_url):
    """Cut the service off its database, then ask.

    Sound because the control proves the setup: with the database refusing every connection and
    the cache unable to prove it is fresh, a well-formed key must be looked up in the database,
    and that lookup fails (a 5xx, never a verdict). A malformed key still gets its 403, so its
    verdict needed neither the database nor the cache (which cannot answer here).
    """
    key = await verified_key(client)
    async with cut_off(client, admin, server_url):
        control = await verify(client, key["key"])
        assert control.status >= 500, await control.text()  # fails closed: no verdict without the database
        await expect_error(control, control.status)
        for bad in (with_wrong_checksum(key["key"]), key["key"][:-1], "sk-abc", "sk-" + "0" * 49):
            await expect_refused(client, bad)
        assert not client.app[KEY_CACHE].fresh
    await wait_until(lambda: answers(client, key["key"], 200), within=5)


async def test_without_its_database_verification_answers_503_and_recovers(client, admin, server_url):
    """docs/gateway.md: a process that cannot prove its cache fresh asks the database and refuses
    with 503 when that fails; SPEC: `service_unavailable` (503, database down)."""
    key = await verified_key(client)
    async with cut_off(client, admin, server_url):
        response = await verify(client, key["key"])
        await expect_error(response, 503, "service_unavailable")
        assert "Retry-After" in response.headers
    await wait_until(lambda: answers(client, key["key"], 200), within=5)
