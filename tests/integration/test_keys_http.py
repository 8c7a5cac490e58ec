"""The key management API over HTTP, end to end against a real PostgreSQL.

Every request goes through the aiohttp application as a user's browser or script would send it;
assertions look at the answer and, through the `admin` connection, at what the database holds.
"""

import asyncio
import base64
import hashlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from events import apikey
from tests.helpers import JWT_SECRET, KEY_FIELDS, auth

BASE = "/api/v1/accounts/user/api-keys"
CREATE = f"{BASE}/create/"
LIST = f"{BASE}/"
OWNER = "acct_owner"
OTHER = "acct_other"
UNKNOWN_KEY_ID = "key_0000000000000000000000"
MIB = 1024 * 1024
ZERO_CHF = "0.000000000"


# Paths and requests


def view_path(key_id: str) -> str:
    return f"{BASE}/{key_id}/"


def rename_path(key_id: str) -> str:
    return f"{BASE}/{key_id}/update/"


def revoke_path(key_id: str) -> str:
    return f"{BASE}/{key_id}/revoke/"


def history_path(key_id: str) -> str:
    return f"{BASE}/{key_id}/events/"


# action name -> (method, path for a key id, extra request arguments)
KEY_ACTIONS = {
    "view": ("GET", view_path, {}),
    "rename": ("PATCH", rename_path, {"json": {"name": "Taken over"}}),
    "revoke": ("POST", revoke_path, {}),
    "history": ("GET", history_path, {}),
}


async def key_action(client, action: str, key_id: str, account: str = OWNER):
    method, path, kwargs = KEY_ACTIONS[action]
    return await client.request(method, path(key_id), headers=auth(account), **kwargs)


async def expect(response, status: int = 200) -> dict:
    """The JSON body of a successful answer with exactly this status."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def expect_error(response, status: int, type_: str) -> str:
    """Assert the error envelope `{"error": {"message", "type"}}` and return its message."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type"}, body
    assert body["error"]["type"] == type_, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message.strip(), body
    return message


async def create(client, name: str = "Production backend", account: str = OWNER) -> dict:
    return await expect(await client.post(CREATE, json={"name": name}, headers=auth(account)), 201)


async def view(client, key_id: str, account: str = OWNER) -> dict:
    return await expect(await client.get(view_path(key_id), headers=auth(account)))


async def list_keys(client, account: str = OWNER, headers: dict | None = None) -> list[dict]:
    return (await expect(await client.get(LIST, headers=headers or auth(account))))["data"]


async def history(client, key_id: str, account: str = OWNER) -> list[dict]:
    return (await expect(await client.get(history_path(key_id), headers=auth(account))))["data"]


async def snapshot(admin) -> dict[str, list[str]]:
    """Every row of the event log and of the key projection, to prove a refused request changed nothing."""
    return {
        table: [row[0] for row in await admin.fetch(f"SELECT t::text FROM {table} t ORDER BY 1")]
        for table in ("events", "api_keys")
    }


def public_view(created: dict) -> dict:
    """The key object of a create answer, without the secret that only that answer carries."""
    return {name: value for name, value in created.items() if name != "key"}


# What a key object looks like


def utc_timestamp(value: str) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    moment = datetime.fromisoformat(value)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1), value
    return moment


def assert_empty_usage(usage: dict) -> None:
    assert usage["total_requests"] == 0
    assert usage["total_cost_chf"] == ZERO_CHF
    window = usage["last_30_days"]
    assert (window["requests"], window["cost_chf"]) == (0, ZERO_CHF)
    daily = window["daily"]
    assert len(daily) == 30
    assert all(day["requests"] == 0 and day["cost_chf"] == ZERO_CHF for day in daily)
    dates = [datetime.fromisoformat(day["date"]).date() for day in daily]
    assert dates == [dates[-1] - timedelta(days=30 - 1 - n) for n in range(30)], "30 days, oldest first"
    now = datetime.now(UTC)
    assert dates[-1] in {now.date(), (now - timedelta(seconds=5)).date()}, "the last day is today (UTC)"


def assert_key_object(key: dict, name: str, status: str = "active") -> None:
    assert set(key) == KEY_FIELDS, key
    assert key["id"].startswith("key_")
    assert key["name"] == name
    assert key["status"] == status
    assert key["masked_key"].startswith("sk-***...") and len(key["masked_key"]) == len("sk-***...") + 4
    created_at = utc_timestamp(key["created_at"])
    if status == "active":
        assert key["revoked_at"] is None
    else:
        assert utc_timestamp(key["revoked_at"]) >= created_at
    assert key["last_used_at"] is None
    assert_empty_usage(key["usage"])


@pytest.fixture
async def key(client) -> dict:
    """One active key of OWNER, as the create answer returned it (with the full `key`)."""
    return await create(client, "Production backend")


# 1. Every management endpoint, at its exact path


async def test_create_answers_201_with_the_full_key_once(client):
    response = await client.post(CREATE, json={"name": "Production backend"}, headers=auth(OWNER))
    created = await expect(response, 201)
    secret = created["key"]
    assert secret.startswith("sk-") and len(secret) >= len("sk-") + 32  # at least 190 random bits
    assert created["masked_key"] == "sk-***..." + secret[-4:]
    assert_key_object(public_view(created), "Production backend")


async def test_two_keys_are_different_secrets_with_different_ids(client):
    first, second = await create(client, "one"), await create(client, "two")
    assert first["id"] != second["id"]
    assert first["key"] != second["key"]


async def test_view_answers_the_key_object_without_the_secret(client, key):
    viewed = await view(client, key["id"])
    assert viewed == public_view(key)
    assert_key_object(viewed, "Production backend")


async def test_list_is_newest_first_and_includes_revoked_keys(client):
    first, second, third = [await create(client, name) for name in ("first", "second", "third")]
    await create(client, "someone else's", account=OTHER)
    await expect(await client.post(revoke_path(second["id"]), headers=auth(OWNER)))

    listed = await list_keys(client)

    assert [(k["name"], k["status"]) for k in listed] == [
        ("third", "active"),
        ("second", "revoked"),
        ("first", "active"),
    ]
    assert listed == [await view(client, k["id"]) for k in (third, second, first)]
    for listed_key in listed:
        assert_key_object(listed_key, listed_key["name"], listed_key["status"])


VALID_NAMES = [
    pytest.param("Staging", "Staging", id="plain"),
    pytest.param("  Staging backend \t\n", "Staging backend", id="trimmed"),
    pytest.param("x", "x", id="one-character"),
    pytest.param("  " + "n" * 100 + "  ", "n" * 100, id="100-characters-after-trimming"),
    pytest.param("Zürich: Produktion ✓ 本番", "Zürich: Produktion ✓ 本番", id="unicode"),
]


@pytest.mark.parametrize(("sent", "stored"), VALID_NAMES)
async def test_create_stores_the_trimmed_name(client, sent, stored):
    created = await create(client, sent)
    assert created["name"] == stored
    assert await view(client, created["id"]) == public_view(created)


@pytest.mark.parametrize(("sent", "stored"), VALID_NAMES)
async def test_rename_answers_the_renamed_key(client, key, sent, stored):
    response = await client.patch(rename_path(key["id"]), json={"name": sent}, headers=auth(OWNER))
    renamed = await expect(response)
    assert renamed == {**public_view(key), "name": stored}
    assert await view(client, key["id"]) == renamed


async def test_revoke_answers_the_revoked_key(client, key):
    revoked = await expect(await client.post(revoke_path(key["id"]), headers=auth(OWNER)))
    assert_key_object(revoked, "Production backend", status="revoked")
    assert revoked == {
        **public_view(key),
        "status": "revoked",
        "revoked_at": revoked["revoked_at"],
        "revoked_reason": "user",
    }
    assert await view(client, key["id"]) == revoked


async def test_revoking_again_is_a_no_op(client, admin, key):
    first = await expect(await client.post(revoke_path(key["id"]), headers=auth(OWNER)))
    before = await snapshot(admin)

    again = await expect(await client.post(revoke_path(key["id"]), headers=auth(OWNER)))

    assert again == first  # same revoked_at: the first revocation stands
    assert await snapshot(admin) == before
    assert [event["type"] for event in await history(client, key["id"])] == ["ApiKeyCreated", "ApiKeyRevoked"]


async def test_history_is_the_lifecycle_oldest_first_without_the_digest(client, key):
    headers = {**auth(OWNER), "X-Request-Id": "req-rename-42"}
    await expect(await client.patch(rename_path(key["id"]), json={"name": "Staging"}, headers=headers))
    await expect(await client.post(revoke_path(key["id"]), headers=auth(OWNER)))
    await create(client, "another key of the same account")

    response = await client.get(history_path(key["id"]), headers=auth(OWNER))
    events = (await expect(response))["data"]

    assert [event["type"] for event in events] == ["ApiKeyCreated", "ApiKeyRenamed", "ApiKeyRevoked"]
    assert [event["position"] for event in events] == sorted(event["position"] for event in events)
    assert all(event["data"]["key_id"] == key["id"] for event in events)
    created, renamed, _ = events
    assert created["data"]["name"] == "Production backend"
    assert (renamed["data"]["previous_name"], renamed["data"]["name"]) == ("Production backend", "Staging")
    assert renamed["request_id"] == "req-rename-42"
    assert all(event["actor"] == OWNER for event in events)
    text = await response.text()
    assert "key_digest" not in text
    assert hashlib.sha256(key["key"].encode()).hexdigest() not in text
    assert key["key"] not in text


# 2. Refused requests: the error envelope, and nothing changed


@dataclass(frozen=True)
class Body:
    raw: bytes
    content_type: str = "application/json"
    chunked: bool = False  # sent without Content-Length, so the server must count itself

    def request_kwargs(self, account: str = OWNER) -> dict:
        data = _chunks(self.raw) if self.chunked else io.BytesIO(self.raw)
        return {"data": data, "headers": {**auth(account), "Content-Type": self.content_type}}


async def _chunks(raw: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def as_json(value) -> Body:
    return Body(json.dumps(value).encode())


TOO_LARGE = b'{"name": "' + b"a" * MIB + b'"}'

# (body, status, type, a text the message must hold: the field it names)
BODY_ERRORS = [
    pytest.param(Body(b'{"name": "x"'), 400, "invalid_request", "JSON", id="malformed-json"),
    pytest.param(Body(b""), 400, "invalid_request", "JSON", id="empty-body"),
    pytest.param(
        Body(b'{"name": "x"}', "text/plain"), 415, "invalid_request", "JSON", id="wrong-content-type"
    ),
    pytest.param(
        Body(b"name=x", "application/x-www-form-urlencoded"), 415, "invalid_request", "JSON", id="form"
    ),
    pytest.param(as_json({}), 400, "invalid_request", "name", id="missing-name"),
    pytest.param(as_json({"name": 42}), 400, "invalid_request", "`$.name`", id="name-not-a-string"),
    pytest.param(as_json({"name": None}), 400, "invalid_request", "`$.name`", id="name-null"),
    pytest.param(as_json({"name": ["x"]}), 400, "invalid_request", "`$.name`", id="name-a-list"),
    pytest.param(as_json(["x"]), 400, "invalid_request", "object", id="not-an-object"),
    pytest.param(
        as_json({"name": "x", "admin": True}), 400, "invalid_request", "`admin`", id="unknown-field"
    ),
    pytest.param(as_json({"name": ""}), 400, "invalid_request", "name", id="empty-name"),
    pytest.param(as_json({"name": " \t "}), 400, "invalid_request", "name", id="whitespace-name"),
    pytest.param(as_json({"name": "n" * 101}), 400, "invalid_request", "name", id="101-characters"),
    pytest.param(as_json({"name": "bell\x07name"}), 400, "invalid_request", "name", id="control-character"),
    pytest.param(as_json({"name": "line\nbreak"}), 400, "invalid_request", "name", id="newline-inside"),
    pytest.param(as_json({"name": "nul\x00byte"}), 400, "invalid_request", "name", id="nul-character"),
    pytest.param(
        as_json({"name": "invoice\u202etxt.exe"}), 400, "invalid_request", "name", id="bidi-override"
    ),
    pytest.param(Body(TOO_LARGE), 413, "payload_too_large", "KiB", id="over-1-MiB"),
    pytest.param(Body(TOO_LARGE, chunked=True), 413, "payload_too_large", "KiB", id="over-1-MiB-chunked"),
]


@pytest.mark.parametrize(("body", "status", "type_", "names"), BODY_ERRORS)
@pytest.mark.parametrize("endpoint", ["create", "rename"])
async def test_a_bad_body_is_refused_and_changes_nothing(
    client, admin, key, endpoint, body, status, type_, names
):
    method, path = ("POST", CREATE) if endpoint == "create" else ("PATCH", rename_path(key["id"]))
    before = await snapshot(admin)

    response = await client.request(method, path, **body.request_kwargs())
    message = await expect_error(response, status, type_)
    assert names in message, message

    assert await snapshot(admin) == before
    assert await list_keys(client) == [public_view(key)]


# Every management endpoint, as (method, path, request arguments) for an existing key id.
def management_requests(key_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("POST", CREATE, {"json": {"name": "x"}}),
        ("GET", LIST, {}),
        *((method, path(key_id), kwargs) for method, path, kwargs in KEY_ACTIONS.values()),
    ]


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("", id="empty-header"),
        pytest.param("Bearer ", id="bearer-without-token"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic-scheme"),
        pytest.param("Token abc", id="other-scheme"),
    ],
)
async def test_a_request_without_bearer_credentials_answers_401(client, admin, key, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    await expect_401_on_every_endpoint(client, admin, key["id"], headers, "authentication_required")


async def expect_401_on_every_endpoint(client, admin, key_id: str, headers: dict, type_: str) -> None:
    before = await snapshot(admin)
    for method, path, kwargs in management_requests(key_id):
        response = await client.request(method, path, headers=headers, **kwargs)
        await expect_error(response, 401, type_)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
    assert await snapshot(admin) == before


@pytest.mark.parametrize(
    ("method", "path", "status", "type_", "allowed"),
    [
        pytest.param("GET", "/api/v1/accounts/user/keys/", 404, "not_found", None, id="unknown-route"),
        pytest.param("GET", f"{BASE}/{{key_id}}/secret/", 404, "not_found", None, id="unknown-key-subpath"),
        pytest.param("DELETE", f"{BASE}/{{key_id}}/", 405, "method_not_allowed", "GET", id="delete-key"),
        pytest.param("POST", LIST, 405, "method_not_allowed", "GET", id="post-list"),
        pytest.param(
            "PUT", f"{BASE}/{{key_id}}/update/", 405, "method_not_allowed", "PATCH", id="put-update"
        ),
        pytest.param("GET", f"{BASE}/{{key_id}}/revoke/", 405, "method_not_allowed", "POST", id="get-revoke"),
        pytest.param(
            "POST", f"{BASE}/{{key_id}}/events/", 405, "method_not_allowed", "GET", id="post-events"
        ),
    ],
)
async def test_routing_errors_use_the_envelope_and_change_nothing(
    client, admin, key, method, path, status, type_, allowed
):
    before = await snapshot(admin)
    response = await client.request(
        method, path.format(key_id=key["id"]), json={"name": "x"}, headers=auth(OWNER)
    )
    await expect_error(response, status, type_)
    if allowed:
        assert allowed in response.headers["Allow"]
    assert await snapshot(admin) == before
    assert await view(client, key["id"]) == public_view(key)


async def test_the_sixth_active_key_is_refused_until_one_is_revoked(client, admin):
    keys = [await create(client, f"key {n}") for n in range(5)]
    before = await snapshot(admin)

    refused = await client.post(CREATE, json={"name": "sixth"}, headers=auth(OWNER))

    message = (await expect_error(refused, 409, "key_limit_reached")).lower()
    assert "revoke" in message and "unused" in message
    assert await snapshot(admin) == before

    await expect(await client.post(revoke_path(keys[0]["id"]), headers=auth(OWNER)))
    sixth = await create(client, "sixth")
    await expect_error(
        await client.post(CREATE, json={"name": "seventh"}, headers=auth(OWNER)), 409, "key_limit_reached"
    )
    listed = await list_keys(client)
    assert [k["id"] for k in listed if k["status"] == "active"] == [
        sixth["id"],
        *(k["id"] for k in reversed(keys[1:])),
    ]
    assert len(listed) == 6
    await create(client, "the limit is per account", account=OTHER)


async def test_renaming_a_revoked_key_answers_409_key_revoked(client, admin, key):
    await expect(await client.post(revoke_path(key["id"]), headers=auth(OWNER)))
    before = await snapshot(admin)

    response = await client.patch(rename_path(key["id"]), json={"name": "Renamed"}, headers=auth(OWNER))

    await expect_error(response, 409, "key_revoked")
    assert await snapshot(admin) == before
    assert (await view(client, key["id"]))["name"] == "Production backend"


@pytest.mark.parametrize("action", KEY_ACTIONS)
async def test_an_unknown_key_id_is_not_found(client, admin, key, action):
    before = await snapshot(admin)
    await expect_error(await key_action(client, action, UNKNOWN_KEY_ID), 404, "not_found")
    assert await snapshot(admin) == before


# 3. Another account's key does not exist for you


@pytest.mark.parametrize("action", KEY_ACTIONS)
async def test_another_accounts_key_is_not_found_and_untouched(client, admin, key, action):
    before = await snapshot(admin)

    foreign = await key_action(client, action, key["id"], account=OTHER)

    await expect_error(foreign, 404, "not_found")
    unknown = await key_action(client, action, UNKNOWN_KEY_ID, account=OTHER)
    assert await foreign.json() == await unknown.json(), "the answer must not reveal that the key exists"
    assert await snapshot(admin) == before
    assert await view(client, key["id"]) == public_view(key)
    assert await list_keys(client, OTHER) == []


# 4. Tokens


def claims(**changes) -> dict:
    """Valid claims for OWNER; a change to None removes the claim."""
    now = int(time.time())
    values = {"sub": OWNER, "account_id": OWNER, "iat": now, "exp": now + 3600, **changes}
    return {name: value for name, value in values.items() if value is not None}


def hs256(payload: dict, secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def b64url(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def with_payload_of(token: str, payload: dict) -> str:
    """`token` with its payload swapped for another one, signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url(payload)}.{signature}"


BAD_TOKENS = {
    "alg-none": lambda: jwt.encode(claims(), None, algorithm="none"),
    "alg-none-by-hand": lambda: f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(claims())}.",
    "wrong-signature": lambda: hs256(claims(), secret="another-secret-" + "y" * 40),
    "algorithm-not-accepted": lambda: hs256(claims(), algorithm="HS384"),
    "tampered-payload": lambda: with_payload_of(hs256(claims(sub=OTHER, account_id=OTHER)), claims()),
    "expired": lambda: hs256(claims(exp=int(time.time()) - 60)),
    "missing-exp": lambda: hs256(claims(exp=None)),
    "missing-sub": lambda: hs256(claims(sub=None)),
    "sk-api-key": apikey.generate,
    "not-a-jwt": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_an_unacceptable_token_answers_401_invalid_token(client, admin, key, make_token):
    headers = {"Authorization": f"Bearer {make_token()}"}
    await expect_401_on_every_endpoint(client, admin, key["id"], headers, "invalid_token")


async def test_account_id_defaults_to_sub_and_wins_when_present(client):
    own = await create(client, "personal", account="acct_alice")
    bearer = {"Authorization": f"Bearer {hs256(claims(sub='acct_alice', account_id=None))}"}
    assert [k["id"] for k in await list_keys(client, headers=bearer)] == [own["id"]]

    team_token = hs256(claims(sub="acct_alice", account_id="acct_team"))
    team_bearer = {"Authorization": f"Bearer {team_token}"}
    assert await list_keys(client, headers=team_bearer) == []
    team_key = await expect(await client.post(CREATE, json={"name": "team"}, headers=team_bearer), 201)
    assert [k["id"] for k in await list_keys(client, "acct_team")] == [team_key["id"]]
    assert [k["id"] for k in await list_keys(client, "acct_alice")] == [own["id"]]


# 5. Concurrency


async def test_fifty_parallel_creates_on_an_empty_account_end_with_exactly_five_keys(client, admin):
    responses = await asyncio.gather(
        *(client.post(CREATE, json={"name": f"parallel {n}"}, headers=auth(OWNER)) for n in range(50))
    )

    statuses = sorted(response.status for response in responses)
    assert statuses == [201] * 5 + [409] * 45
    for response in responses:
        if response.status == 409:
            await expect_error(response, 409, "key_limit_reached")
    created = [await response.json() for response in responses if response.status == 201]
    listed = await list_keys(client)
    assert sorted(k["id"] for k in listed) == sorted(k["id"] for k in created)
    assert all(k["status"] == "active" for k in listed)
    assert len({k["key"] for k in created}) == 5
    stored_creates = await admin.fetchval(
        "SELECT count(*) FROM events WHERE account_id = $1 AND type = 'ApiKeyCreated'", OWNER
    )
    assert stored_creates == 5


async def test_parallel_revokes_of_one_key_record_one_revocation(client, admin, key):
    responses = await asyncio.gather(
        *(client.post(revoke_path(key["id"]), headers=auth(OWNER)) for _ in range(20))
    )

    revoked = [await expect(response) for response in responses]
    assert all(answer == revoked[0] and answer["status"] == "revoked" for answer in revoked)
    assert await admin.fetchval("SELECT count(*) FROM events WHERE type = 'ApiKeyRevoked'") == 1


# 6. The full key is shown once and kept nowhere


async def test_the_full_key_is_only_in_the_create_answer(client, admin, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="aiohttp.access")
    first, second = await create(client, "first"), await create(client, "second")
    answers = [
        await client.patch(rename_path(first["id"]), json={"name": "renamed"}, headers=auth(OWNER)),
        await client.post(revoke_path(second["id"]), headers=auth(OWNER)),
        await client.get(LIST, headers=auth(OWNER)),
        *[
            await client.get(path(k["id"]), headers=auth(OWNER))
            for k in (first, second)
            for path in (view_path, history_path)
        ],
    ]
    texts = []
    for answer in answers:
        await expect(answer)
        texts.append(await answer.text())

    tables = await admin.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    database = [
        row[0]
        for table in tables
        for row in await admin.fetch(f'SELECT t::text FROM public."{table["table_name"]}" t')
    ]
    assert any(first["id"] in row for row in database), "the scan reads the rows that hold the keys"
    logged = caplog.text
    assert "/api-keys/create/" in logged, "the access log is captured"

    for secret in (first["key"], second["key"]):
        body = secret.removeprefix("sk-")
        for place, text in [("log", logged), *(("answer", t) for t in texts), *(("db", r) for r in database)]:
            assert body not in text, f"the key appears in the {place}: {text[:200]}"


# 7. Read-your-writes


async def test_each_write_is_in_the_very_next_read(client):
    for n in range(5):
        created = await create(client, f"key {n}")
        assert (await list_keys(client))[0] == public_view(created)
    renamed = await expect(
        await client.patch(rename_path(created["id"]), json={"name": "renamed"}, headers=auth(OWNER))
    )
    assert (await list_keys(client))[0] == renamed
    revoked = await expect(await client.post(revoke_path(created["id"]), headers=auth(OWNER)))
    assert (await list_keys(client))[0] == revoked
