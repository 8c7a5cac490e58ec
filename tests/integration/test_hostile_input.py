"""Hostile input: whatever a client sends, the answer is a 4xx error envelope and no table changes.

Every case names what it sends; each one is answered with `{"error": {"message", "type"}}` and an
exact status and type, and every table (and sequence) of the database is the same before and after.
The bodies are built from requests that would be accepted: padded, chunked, duplicated or spoiled in
one place, so a case that slipped through would store something and fail here. The controls at the
end show that the untouched requests are indeed accepted and stored.

One database and one server serve the whole module (a fresh database per case costs 0.4 s); the
`client` and `admin` fixtures here are module-scoped versions of those in conftest.
"""

import asyncio
import contextlib
import gzip
import io
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.config import Settings
from service.http import bodies
from service.http.access_log import AccessLog
from service.http.app import create_app
from service.http.bodies import DEFAULT_BODY_LIMIT, LARGEST_BODY_LIMIT
from service.store.db import with_database
from tests.helpers import (
    CHECKPOINT_KEY,
    JWT_SECRET,
    KEYS,
    SERVICE_TOKEN,
    USAGE,
    VERIFY,
    auth,
    bearer,
    expect,
    expect_error,
    key_path,
    service_headers,
    settle,
    subscription_path,
    token_for,
    usage_event,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.server_independent,
]  # HTTP parsing and our code: CI's second pass leaves it out

OWNER = "acct_hostile"
FRESH = "acct_hostile_fresh"  # the prefix of accounts without a subscription
CREATE = f"{KEYS}/create/"
AUDIT = "/api/v1/audit/events"
TABLES = {
    "public.events",
    "public.api_keys",
    "public.subscriptions",
    "public.key_usage_totals",
    "public.key_usage_daily",
    "public.projector_checkpoints",
    "public.schema_migrations",
}


# The module's database, server and data


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def database(server_url, template_database) -> AsyncIterator[str]:
    name = f"keyledger_hostile_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f"CREATE DATABASE {name} TEMPLATE {template_database}")
        yield with_database(server_url, name)
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def settings(database) -> Settings:
    return Settings(
        database_url=database,
        jwt_secret=JWT_SECRET,
        service_token=SERVICE_TOKEN,
        checkpoint_key=CHECKPOINT_KEY,
        checkpoint_interval=0,  # as conftest's: settle() then finds no checkpoint pending
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(database) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(settings) -> AsyncIterator[TestClient]:
    """The app on aiohttp's TestServer, as conftest's `client` serves it, for the whole module."""
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


@dataclass(frozen=True)
class World:
    key_id: str
    secret: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(client, admin) -> World:
    """OWNER: one active key with one recorded request, and an active subscription."""
    created = await expect(await client.post(CREATE, json={"name": "Production"}, headers=auth(OWNER)), 201)
    await expect(
        await client.put(
            subscription_path(OWNER), json={"status": "active", "plan": "pro"}, headers=service_headers()
        )
    )
    seeded = await client.post(
        USAGE, json={"events": [usage_event(created["id"], "seed")]}, headers=service_headers()
    )
    await expect(seeded, 202)
    await settle(admin)
    tables = await snapshot(admin)
    assert set(tables) >= TABLES, sorted(tables)
    assert all(tables[name][0] > 0 for name in TABLES), tables
    return World(key_id=created["id"], secret=created["key"])


# "No table changed"


async def snapshot(admin: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Row count and a hash of the ordered rows of every table of every schema the migrations made,
    and the state of every sequence (a refused insert that was rolled back still moves one)."""
    relations = await admin.fetch(
        """SELECT format('%I.%I', n.nspname, c.relname) AS ident,
                  format('%L', n.nspname || '.' || c.relname) AS label, c.relkind = 'S' AS is_sequence
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg\\_toast%'
           ORDER BY 1"""
    )
    queries = [
        f"SELECT {r['label']}, 1::bigint, (SELECT last_value || '/' || is_called FROM {r['ident']})"
        if r["is_sequence"]
        else f"SELECT {r['label']}, count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
        f" FROM {r['ident']} t"
        for r in relations
    ]
    return {row[0]: (row[1], row[2]) for row in await admin.fetch(" UNION ALL ".join(queries))}


@contextlib.asynccontextmanager
async def nothing_changes(admin: asyncpg.Connection) -> AsyncIterator[None]:
    await settle(admin)
    before = await snapshot(admin)
    yield
    after = await snapshot(admin)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a refused request changed {changed}"


# Raw HTTP, for what an HTTP client library would not send


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


async def exchange(client: TestClient, request: bytes | list[bytes], within: float = 10) -> list[RawAnswer]:
    """Send the bytes as they are (parts a moment apart); every answer until the server closes."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    answers = []
    try:
        for n, part in enumerate([request] if isinstance(request, bytes) else request):
            if n:
                await writer.drain()
                await asyncio.sleep(0.05)  # the server has read the part before, and acted on it
            writer.write(part)
        async with asyncio.timeout(within):
            while status_line := await reader.readline():
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answers.append(RawAnswer(int(status_line.split()[1]), headers, body))
                if headers.get("connection", "").lower() == "close":
                    break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answers


def raw_request(method: str, target: str | bytes, headers: dict[str, str], body: bytes = b"") -> bytes:
    target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{name}: {value}".encode() for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_envelope(answer: RawAnswer, status: int | tuple[int, ...], type_: str) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert answer.status in statuses, answer
    assert answer.headers["content-type"].startswith("application/json"), answer
    envelope = json.loads(answer.body)
    assert set(envelope) == {"error"} and set(envelope["error"]) == {"message", "type"}, envelope
    assert envelope["error"]["type"] == type_, envelope
    assert isinstance(envelope["error"]["message"], str) and envelope["error"]["message"].strip()
    return envelope["error"]["message"]


# The endpoints that take a JSON body, each aimed at something a valid body would change


@dataclass(frozen=True)
class Target:
    method: str
    path: str
    headers: dict[str, str]
    limit: int
    valid: Callable[[], dict]  # a body this endpoint accepts, and stores something for

    def body(self, **changes) -> bytes:
        return json.dumps({**self.valid(), **changes}).encode()


def usage_batch(key_id: str, events: int = 2) -> dict:
    return {"events": [usage_event(key_id, f"req-{uuid.uuid4()}") for _ in range(events)]}


def targets(world: World, account: str = OWNER, fresh: str | None = None, key_id: str | None = None) -> dict:
    """Each endpoint, aimed so that an accepted body would change something: a new name, an account
    without a subscription (a new one each time), new request ids."""
    key_id = key_id or world.key_id
    fresh = fresh or f"{FRESH}_{secrets.token_hex(4)}"
    return {
        "create": Target("POST", CREATE, auth(account), DEFAULT_BODY_LIMIT, lambda: {"name": "Hostile"}),
        "rename": Target(
            "PATCH",
            f"{KEYS}/{key_id}/update/",
            auth(account),
            DEFAULT_BODY_LIMIT,
            lambda: {"name": f"Renamed {secrets.token_hex(4)}"},
        ),
        "subscription": Target(
            "PUT",
            subscription_path(fresh),
            service_headers(),
            DEFAULT_BODY_LIMIT,
            lambda: {"status": "active", "plan": "pro"},
        ),
        "usage": Target(
            "POST", USAGE, service_headers(), LARGEST_BODY_LIMIT, lambda: usage_batch(world.key_id)
        ),
        "rotate": Target(
            "POST",
            f"{KEYS}/{key_id}/rotate/",
            auth(account),
            DEFAULT_BODY_LIMIT,
            lambda: {"grace_period_seconds": 3600},
        ),
    }


ENDPOINTS = ["create", "rename", "subscription", "usage", "rotate"]


@dataclass(frozen=True)
class Send:
    """What to send to a target: the body, and how."""

    body: bytes
    content_type: str | None = "application/json"
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    headers: dict[str, str] = field(default_factory=dict)


async def send(client: TestClient, target: Target, what: Send):
    headers = {**target.headers, **what.headers}
    if what.content_type is not None:
        headers["Content-Type"] = what.content_type
    data = chunks(what.body) if what.chunked else io.BytesIO(what.body)  # raw bytes: aiohttp warns
    return await client.request(
        target.method, target.path, data=data, headers=headers, skip_auto_headers={"Content-Type"}
    )


async def chunks(body: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def padded_over(target: Target) -> bytes:
    """A valid body made one byte longer than the limit with trailing whitespace (still valid JSON)."""
    body = target.body()
    return body + b" " * (target.limit + 1 - len(body))


def spoiled_name(target: Target, raw_name: bytes) -> bytes:
    """The valid body with its first field (the first event's `model`; `plan`, not `status`) replaced by raw JSON."""
    body = target.valid()
    holder, key = (body["events"][0], "model") if "events" in body else (body, next(iter(body)))
    key = "plan" if key == "status" else key
    holder[key] = "\x00SPOT\x00"
    return json.dumps(body).encode().replace(b'"\\u0000SPOT\\u0000"', raw_name)


def repeated(target: Target, escaped: bool = False) -> bytes:
    """The valid body with one key sent twice, the valid value last (msgspec keeps the last one)."""
    body = target.valid()
    holder = body["events"][0] if "events" in body else body
    key = next(iter(holder))
    spelled = key.replace(key[0], f"\\u{ord(key[0]):04x}", 1) if escaped else key
    decoy = {"name": "decoy", "status": "inactive", "request_id": "decoy", "grace_period_seconds": 0}[key]
    text = json.dumps(body)
    first = json.dumps({key: holder[key]})[1:-1]
    return text.replace(first, f'"{spelled}": "{decoy}", {first}', 1).encode()


BODY_CASES: dict[str, tuple[Callable[[Target], Send], int, str]] = {
    "one-byte-over-the-limit": (lambda t: Send(padded_over(t)), 413, "payload_too_large"),
    "one-byte-over-the-limit-chunked": (
        lambda t: Send(padded_over(t), chunked=True),
        413,
        "payload_too_large",
    ),
    "gzip-bomb-over-the-limit": (
        lambda t: Send(gzip.compress(padded_over(t)), headers={"Content-Encoding": "gzip"}),
        413,
        "payload_too_large",
    ),
    "gzip-that-is-not-gzip": (
        lambda t: Send(b"\x1f\x8b\x08\x00" + b"\xff" * 64, headers={"Content-Encoding": "gzip"}),
        400,
        "invalid_request",
    ),
    "gzip-cut-short": (
        lambda t: Send(gzip.compress(t.body())[:-12], headers={"Content-Encoding": "gzip"}),
        400,
        "invalid_request",
    ),
    "100000-nested-arrays": (lambda t: Send(b"[" * 100_000 + b"]" * 100_000), 400, "invalid_request"),
    "100000-nested-arrays-unclosed": (lambda t: Send(b"[" * 100_000), 400, "invalid_request"),
    "100000-nested-arrays-in-a-field": (
        lambda t: Send(spoiled_name(t, b"[" * 100_000 + b"]" * 100_000)),
        400,
        "invalid_request",
    ),
    "invalid-utf-8": (lambda t: Send(spoiled_name(t, b'"\xff\xfe"')), 400, "invalid_request"),
    "overlong-utf-8-nul": (lambda t: Send(spoiled_name(t, b'"a\xc0\x80b"')), 400, "invalid_request"),
    "utf-8-encoded-surrogate": (lambda t: Send(spoiled_name(t, b'"\xed\xa0\x80"')), 400, "invalid_request"),
    "lone-surrogate-escape": (lambda t: Send(spoiled_name(t, b'"\\udc00"')), 400, "invalid_request"),
    "utf-16-body": (lambda t: Send(t.body().decode().encode("utf-16")), 400, "invalid_request"),
    "utf-8-bom-first": (lambda t: Send(b"\xef\xbb\xbf" + t.body()), 400, "invalid_request"),
    "content-type-text-plain": (lambda t: Send(t.body(), "text/plain"), 415, "invalid_request"),
    "content-type-form": (
        lambda t: Send(t.body(), "application/x-www-form-urlencoded"),
        415,
        "invalid_request",
    ),
    "content-type-missing": (lambda t: Send(t.body(), None), 415, "invalid_request"),
    "empty-body": (lambda t: Send(b""), 400, "invalid_request"),
    "whitespace-only": (lambda t: Send(b" \r\n\t "), 400, "invalid_request"),
    "json-null": (lambda t: Send(b"null"), 400, "invalid_request"),
    "json-array-of-the-body": (lambda t: Send(b"[" + t.body() + b"]"), 400, "invalid_request"),
    "json-string": (lambda t: Send(b'"name"'), 400, "invalid_request"),
    "json-number": (lambda t: Send(b"1"), 400, "invalid_request"),
    "two-json-documents": (lambda t: Send(t.body() + b" " + t.body()), 400, "invalid_request"),
    "trailing-garbage": (lambda t: Send(t.body() + b" x"), 400, "invalid_request"),
    "trailing-comma": (lambda t: Send(t.body()[:-1] + b",}"), 400, "invalid_request"),
    "single-quotes": (lambda t: Send(t.body().replace(b'"', b"'")), 400, "invalid_request"),
    "nan-literal": (lambda t: Send(spoiled_name(t, b"NaN")), 400, "invalid_request"),
    "infinity-literal": (lambda t: Send(spoiled_name(t, b"Infinity")), 400, "invalid_request"),
    "repeated-key": (lambda t: Send(repeated(t)), 400, "invalid_request"),
    "repeated-key-behind-an-escape": (lambda t: Send(repeated(t, escaped=True)), 400, "invalid_request"),
    "unknown-field": (lambda t: Send(t.body(admin=True)), 400, "invalid_request"),
}


# Rotation takes no body at all (its grace period is optional), so an empty one is a valid request.
HOSTILE_BODIES = [
    pytest.param(endpoint, *case, id=f"{name}-{endpoint}")
    for name, case in BODY_CASES.items()
    for endpoint in ENDPOINTS
    if (name, endpoint) != ("empty-body", "rotate")
]


@pytest.mark.parametrize(("endpoint", "make", "status", "type_"), HOSTILE_BODIES)
async def test_a_hostile_body_is_refused_and_changes_nothing(
    client, admin, world, endpoint, make, status, type_
):
    target = targets(world)[endpoint]
    async with nothing_changes(admin):
        await expect_error(await send(client, target, make(target)), status, type_)


DECLARED_LENGTHS = {
    "one-byte-over-the-limit": (lambda limit: limit + 1, 413, "payload_too_large"),
    "10-GiB": (lambda limit: 10 * 2**30, 413, "payload_too_large"),
    "2**64": (lambda limit: 2**64, 400, "invalid_request"),  # aiohttp's parser: an overflow
}


@pytest.mark.parametrize(
    ("declared", "status", "type_"), DECLARED_LENGTHS.values(), ids=DECLARED_LENGTHS.keys()
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_content_length_over_the_limit_is_refused_before_the_body_arrives(
    client, admin, world, endpoint, declared, status, type_
):
    """The header claims more than the limit, the body is small and valid: refused at once, no wait."""
    target = targets(world)[endpoint]
    headers = {
        **target.headers,
        "Content-Type": "application/json",
        "Content-Length": str(declared(target.limit)),
        "Connection": "close",
    }
    async with nothing_changes(admin):
        [answer] = await exchange(
            client, raw_request(target.method, target.path, headers, target.body()), within=5
        )
        assert_envelope(answer, status, type_)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_content_length_that_promises_more_than_is_sent_times_out(
    client, admin, world, endpoint, monkeypatch
):
    """Half the body arrives, the rest never does: an answer when the body's time is up, not a hang."""
    monkeypatch.setattr(bodies, "BODY_DEADLINE", 0.3)
    target = targets(world)[endpoint]
    body = target.body()
    headers = {**target.headers, "Content-Type": "application/json", "Content-Length": str(len(body) * 2)}
    headers["Connection"] = "close"
    async with nothing_changes(admin):
        [answer] = await exchange(client, raw_request(target.method, target.path, headers, body), within=5)
        assert_envelope(answer, 408, "invalid_request")


BROKEN_CHUNKS = {
    "bad-chunk-size": lambda rest: b"zz\r\n" + rest + b"\r\n0\r\n\r\n",
    "chunk-longer-than-said": lambda rest: b"%x\r\n%s!!\r\n0\r\n\r\n" % (len(rest), rest),
    "chunk-without-its-crlf": lambda rest: b"%x\r\n%sXX0\r\n\r\n" % (len(rest), rest),
}


@pytest.mark.parametrize("broken", BROKEN_CHUNKS.values(), ids=BROKEN_CHUNKS.keys())
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_chunked_body_that_breaks_midway_is_refused(client, admin, world, endpoint, broken):
    """The headers and a first chunk arrive, the handler starts reading, then the framing breaks."""
    target = targets(world)[endpoint]
    body = target.body()
    headers = {**target.headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    first = b"5\r\n" + body[:5] + b"\r\n"
    async with nothing_changes(admin):
        answers = await exchange(
            client, [raw_request(target.method, target.path, headers, first), broken(body[5:])], within=3
        )
        assert answers, "the server closed the connection without an answer"
        for answer in answers:
            assert_envelope(answer, 400, "invalid_request")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_content_length_shorter_than_the_body_answers_with_envelopes(client, admin, world, endpoint):
    """The body is cut where the header says; what follows reads as a request, and is not one."""
    target = targets(world)[endpoint]
    body = target.body()
    headers = {**target.headers, "Content-Type": "application/json", "Content-Length": str(len(body) // 2)}
    async with nothing_changes(admin):
        answers = await exchange(client, raw_request(target.method, target.path, headers, body + b"\r\n\r\n"))
        assert answers, "no answer"
        for answer in answers:  # aiohttp drops the first request when the rest fails to parse at once
            assert_envelope(answer, 400, "invalid_request")


# Fields: what names, plans and usage reports may hold

TEXT_CASES = {
    "nul": "a\x00b",
    "bell": "a\x07b",
    "escape-sequence": "\x1b[31mred\x1b[0m",
    "delete": "a\x7fb",
    "c1-control": "a\x85b",
    "bidi-override": "invoice\u202etxt.exe",
    "bidi-isolate": "a\u2066b\u2069",
    "zero-width-space": "pro\u200bduction",
    "zero-width-only": "\u200b",
    "word-joiner": "a\u2060b",
    "byte-order-mark": "\ufeffname",
}


def name_cases() -> dict[str, object]:
    cases: dict[str, object] = dict(TEXT_CASES)
    cases |= {
        "10000-characters": "n" * 10_000,
        "101-characters": "n" * 101,
        "empty": "",
        "only-whitespace": " \t\u3000 ",
        "number": 42,
        "huge-integer-2**64": 2**64,
        "huge-integer-10**400": 10**400,
        "negative-zero": -0.0,
        "float": 1.5,
        "boolean": True,
        "null": None,
        "list": ["Production"],
        "object": {"name": "Production"},
    }
    return cases


NAME_CASES = name_cases()


@pytest.mark.parametrize("value", NAME_CASES.values(), ids=NAME_CASES.keys())
@pytest.mark.parametrize("endpoint", ["create", "rename"])
async def test_a_key_name_that_is_not_a_plain_label_is_refused(client, admin, world, endpoint, value):
    target = targets(world)[endpoint]
    async with nothing_changes(admin):
        response = await send(client, target, Send(raw_json({"name": value})))
        message = await expect_error(response, 400, "invalid_request")
        assert "name" in message, message


def raw_json(value) -> bytes:
    """JSON as a hostile client writes it: Python's json, which also writes 10**400 as digits."""
    return json.dumps(value).encode()


SUBSCRIPTION_CASES = {
    **{f"plan-{name}": {"status": "active", "plan": text} for name, text in TEXT_CASES.items()},
    "plan-10000-characters": {"status": "active", "plan": "p" * 10_000},
    "plan-trailing-newline": {"status": "active", "plan": "pro\n"},
    "plan-non-ascii": {"status": "active", "plan": "pr\u00f6"},
    "plan-number": {"status": "active", "plan": 5},
    "plan-huge-integer": {"status": "active", "plan": 10**400},
    "plan-null": {"status": "active", "plan": None},
    "status-nul-suffix": {"status": "active\x00", "plan": "pro"},
    "status-upper-case": {"status": "ACTIVE", "plan": "pro"},
    "status-boolean": {"status": True, "plan": "pro"},
    "status-number": {"status": 1, "plan": "pro"},
    "status-null": {"status": None, "plan": "pro"},
    "status-missing": {"plan": "pro"},
}


@pytest.mark.parametrize(("case", "body"), SUBSCRIPTION_CASES.items(), ids=SUBSCRIPTION_CASES.keys())
async def test_a_subscription_body_out_of_shape_is_refused(client, admin, world, case, body):
    target = targets(world)["subscription"]
    field = case.split("-")[0]  # each case spoils the field its name begins with
    async with nothing_changes(admin):
        message = await expect_error(await send(client, target, Send(raw_json(body))), 400, "invalid_request")
        assert field in message, message


def usage_cases() -> dict[str, tuple[str, object]]:
    cases: dict[str, tuple[str, object]] = {}
    for name in ("request_id", "key_id", "endpoint", "model"):
        cases |= {
            f"{name}-nul": (name, "a\x00b"),
            f"{name}-nul-only": (name, "\x00"),
            f"{name}-bell": (name, "a\x07b"),
            f"{name}-escape-sequence": (name, "\x1b[2J"),
            f"{name}-newline": (name, "a\nb"),
            f"{name}-10000-characters": (name, "x" * 10_000),
            f"{name}-number": (name, 12345),
            f"{name}-boolean": (name, False),
        }
    cases |= {
        "units-as-a-string": ("units", "812"),
        "units-2**64": ("units", 2**64),
        "units-10**400": ("units", 10**400),
        "units-negative": ("units", -1),
        "units-float": ("units", 1.5),
        "units-negative-zero-float": ("units", -0.0),
        "units-boolean": ("units", True),
        "units-null": ("units", None),
        "cost-as-a-float": ("cost_chf", 0.00015),
        "cost-as-an-integer": ("cost_chf", 1),
        "cost-as-a-boolean": ("cost_chf", True),
        "cost-NaN": ("cost_chf", "NaN"),
        "cost-Infinity": ("cost_chf", "Infinity"),
        "cost-negative-zero": ("cost_chf", "-0"),
        "cost-negative-zero-decimal": ("cost_chf", "-0.0"),
        "cost-400-digits": ("cost_chf", "1" + "0" * 400),
        "cost-2**64": ("cost_chf", str(2**64)),
        "cost-exponent": ("cost_chf", "1e-3"),
        "cost-10-decimals": ("cost_chf", "0.0000000001"),
        "cost-nul-suffix": ("cost_chf", "0.1\x00"),
        "cost-trailing-newline": ("cost_chf", "0.1\n"),
        "cost-arabic-digits": ("cost_chf", "\u0660.\u0661"),
        "occurred_at-number": ("occurred_at", 1_700_000_000),
        "occurred_at-empty": ("occurred_at", ""),
        "occurred_at-nul": ("occurred_at", "2026-01-01T00:00:00Z\x00"),
        "occurred_at-year-0": ("occurred_at", "0000-01-01T00:00:00Z"),
    }
    return cases


USAGE_CASES = usage_cases()


@pytest.mark.parametrize(("name", "value"), USAGE_CASES.values(), ids=USAGE_CASES.keys())
async def test_a_usage_event_out_of_shape_refuses_the_batch(client, admin, world, name, value):
    batch = usage_batch(world.key_id, events=3)
    batch["events"][1][name] = value
    async with nothing_changes(admin):
        response = await send(client, targets(world)["usage"], Send(raw_json(batch)))
        message = await expect_error(response, 400, "invalid_request")
        assert "events[1]" in message and name in message, message


async def test_a_well_formed_usage_event_far_in_the_future_is_refused_by_the_log(client, admin, world):
    batch = usage_batch(world.key_id, events=3)
    batch["events"][1]["occurred_at"] = "9999-12-31T23:59:59Z"
    async with nothing_changes(admin):
        response = await send(client, targets(world)["usage"], Send(raw_json(batch)))
        message = await expect_error(response, 422, "unprocessable")
        assert "events[1]: occurred_at" in message, message


# Paths: key ids and account ids that are not ids

PATH_SEGMENTS = {
    "dot-dot": "..",
    "encoded-dot-dot": "%2e%2e",
    "encoded-slash": "a%2Fb",
    "nul": "%00",
    "nul-inside": "key_%00x",
    "newline": "key_x%0A",
    "backslash": "a%5Cb",
    "non-ascii-encoded": "%C3%A9t%C3%A9",
    "bidi-override": "key_%E2%80%AEx",
    "zero-width-space": "key_%E2%80%8Bx",
    "space": "a%20b",
    "5000-characters": "k" * 5000,
}
RAW_NON_ASCII = "\u00e9t\u00e9"  # not percent-encoded: aiohttp's parser refuses the request line


def key_id_cases() -> dict[str, Callable[[World], str]]:
    cases = {name: (lambda world, segment=segment: segment) for name, segment in PATH_SEGMENTS.items()}
    cases |= {
        "real-id-nul-suffix": lambda world: f"{world.key_id}%00",
        "real-id-newline-suffix": lambda world: f"{world.key_id}%0A",
        "real-id-encoded-slash-suffix": lambda world: f"{world.key_id}%2F",
        "real-id-dot-dot": lambda world: f"{world.key_id}/..",
        "real-id-upper-case": lambda world: world.key_id.upper(),
        "real-id-space-suffix": lambda world: f"{world.key_id}%20",
        "non-ascii-raw-utf-8": lambda world: RAW_NON_ASCII,
    }
    return cases


KEY_ID_CASES = key_id_cases()
KEY_ACTIONS = {
    "view": ("GET", "/"),
    "rename": ("PATCH", "/update/"),
    "revoke": ("POST", "/revoke/"),
    "history": ("GET", "/events/"),
}


@pytest.mark.parametrize("segment", KEY_ID_CASES.values(), ids=KEY_ID_CASES.keys())
@pytest.mark.parametrize("action", KEY_ACTIONS)
async def test_a_key_id_that_is_not_a_key_id_is_not_found(client, admin, world, action, segment):
    method, suffix = KEY_ACTIONS[action]
    key_id = segment(world)
    body = b'{"name": "Renamed"}' if action == "rename" else b""
    headers = {**auth(OWNER), "Content-Type": "application/json", "Content-Length": str(len(body))}
    headers["Connection"] = "close"
    async with nothing_changes(admin):
        [answer] = await exchange(client, raw_request(method, f"{KEYS}/{key_id}{suffix}", headers, body))
        if key_id == RAW_NON_ASCII:
            assert_envelope(answer, 400, "invalid_request")
        else:
            assert_envelope(answer, 404, "not_found")


ACCOUNT_ID_CASES = {
    **PATH_SEGMENTS,
    "101-characters": "a" * 101,
    "leading-dot": ".acct",
    "bell": "acct%07",
    "trailing-newline": "acct%0A",
    "non-ascii-raw-utf-8": RAW_NON_ASCII,
}


@pytest.mark.parametrize("segment", ACCOUNT_ID_CASES.values(), ids=ACCOUNT_ID_CASES.keys())
async def test_an_account_id_that_is_not_an_id_is_refused(client, admin, world, segment):
    body = b'{"status": "active", "plan": "pro"}'
    headers = {**service_headers(), "Content-Type": "application/json", "Content-Length": str(len(body))}
    headers["Connection"] = "close"
    async with nothing_changes(admin):
        [answer] = await exchange(client, raw_request("PUT", subscription_path(segment), headers, body))
        message = assert_envelope(answer, 400, "invalid_request")
        if segment != RAW_NON_ASCII:  # that one aiohttp's parser refuses before any route
            assert "account_id" in message, message


# The audit query

AUDIT_CASES = {
    "after-negative": "after=-1",
    "after-word": "after=abc",
    "after-float": "after=1.5",
    "after-exponent": "after=1e3",
    "after-2**63": f"after={2**63}",
    "after-2**64": f"after={2**64}",
    "after-10**400": f"after={10**400}",
    "after-5000-digits": f"after={'9' * 5000}",
    "after-superscript-two": "after=%C2%B2",
    "after-arabic-digit": "after=%D9%A1",
    "after-fullwidth-digit": "after=%EF%BC%91",
    "after-nul": "after=1%00",
    "after-empty": "after=",
    "limit-zero": "limit=0",
    "limit-over-the-page": "limit=10001",
    "limit-NaN": "limit=NaN",
    "limit-Infinity": "limit=Infinity",
    "limit-negative-zero": "limit=-0",
    "limit-boolean": "limit=true",
    "account-id-nul": "account_id=%00",
    "account-id-nul-inside": f"account_id={OWNER}%00",
    "account-id-escape-sequence": "account_id=%1B%5B2J",
}


@pytest.mark.parametrize("query", AUDIT_CASES.values(), ids=AUDIT_CASES.keys())
async def test_an_audit_query_out_of_range_is_refused(client, admin, world, query):
    async with nothing_changes(admin):
        [answer] = await exchange(
            client, raw_request("GET", f"{AUDIT}?{query}", {**service_headers(), "Connection": "close"})
        )
        assert_envelope(answer, 400, "invalid_request")


# The proofs' sizes (SPEC, "Verifiable history"): each parameter refused by name, nothing made

HOSTILE_NUMBERS = {
    "negative": "-1", "word": "abc", "float": "1.5", "exponent": "1e3", "2**63": str(2**63),
    "10**400": str(10**400), "5000-digits": "9" * 5000, "superscript-two": "%C2%B2",
    "arabic-digit": "%D9%A1", "fullwidth-digit": "%EF%BC%91", "nul": "1%00", "empty": "",
    "NaN": "NaN", "boolean": "true", "plus-sign": "%2B1", "spaces": "%201%20",
}  # fmt: skip
PROOF_CASES = {
    f"{path}-{name}-{kind}": (path, query.format(value), name)
    for path, query, name in (
        ("checkpoint", "tree_size={}", "tree_size"),
        ("proof/inclusion", "leaf_index={}&tree_size=1", "leaf_index"),
        ("proof/inclusion", "leaf_index=0&tree_size={}", "tree_size"),
        ("proof/consistency", "first={}&second=1", "first"),
        ("proof/consistency", "first=1&second={}", "second"),
    )
    for kind, value in HOSTILE_NUMBERS.items()
}


@pytest.mark.parametrize(("path", "query", "name"), PROOF_CASES.values(), ids=PROOF_CASES.keys())
async def test_a_hostile_proof_size_is_refused_naming_it(client, admin, world, path, query, name):
    async with nothing_changes(admin):
        request = raw_request(
            "GET", f"/api/v1/audit/{path}?{query}", {**service_headers(), "Connection": "close"}
        )
        [answer] = await exchange(client, request)
        assert name in assert_envelope(answer, 400, "invalid_request")


@pytest.mark.parametrize("value", ["yes", "TRUE", "1", "true%00", "", "true&proof=true"])
async def test_a_hostile_proof_flag_on_a_key_history_is_refused(client, admin, world, value):
    async with nothing_changes(admin):
        request = raw_request(
            "GET", f"{key_path(world.key_id)}events/?proof={value}", {**auth(OWNER), "Connection": "close"}
        )
        [answer] = await exchange(client, request)
        assert "proof" in assert_envelope(answer, 400, "invalid_request")


# Key verification: the Authorization header is the whole input


def verify_cases() -> dict[str, tuple[Callable[[World], bytes], int]]:
    """Authorization values; the status: 403 for a key that is not valid, 400 for a header HTTP forbids."""
    return {
        "7000-character-key": (lambda w: b"Bearer sk-" + b"a" * 7000, 403),
        "real-key-with-a-bell": (lambda w: f"Bearer {w.secret}\x07".encode(), 400),
        "real-key-with-escape": (lambda w: f"Bearer \x1b[2J{w.secret}".encode(), 400),
        "real-key-with-a-tab-inside": (lambda w: f"Bearer {w.secret[:10]}\t{w.secret[10:]}".encode(), 403),
        "real-key-with-bidi": (lambda w: f"Bearer {w.secret}\u202e".encode(), 403),
        "real-key-with-zero-width": (lambda w: f"Bearer {w.secret}\u200b".encode(), 403),
        "real-key-latin-1-byte": (lambda w: f"Bearer {w.secret}".encode() + b"\xff", 403),
        "real-key-invalid-utf-8": (lambda w: f"Bearer {w.secret[:-1]}".encode() + b"\xc3", 403),
        "real-key-upper-case": (lambda w: f"Bearer {w.secret.upper()}".encode(), 403),
        "real-key-url-encoded": (lambda w: f"Bearer {w.secret[:-1]}%{ord(w.secret[-1]):02X}".encode(), 403),
        "real-key-twice": (lambda w: f"Bearer {w.secret} {w.secret}".encode(), 403),
        "real-key-with-non-ascii-digit": (lambda w: f"Bearer {w.secret[:-1]}\u0661".encode(), 403),
        "jwt-instead-of-key": (lambda w: f"Bearer {token_for(OWNER)}".encode(), 403),
        "service-token-instead-of-key": (lambda w: f"Bearer {SERVICE_TOKEN}".encode(), 403),
    }


VERIFY_CASES = verify_cases()


@pytest.mark.parametrize(("authorization", "status"), VERIFY_CASES.values(), ids=VERIFY_CASES.keys())
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_verify_refuses_a_mangled_key(client, admin, world, method, authorization, status):
    request = raw_request(method, VERIFY, {"Connection": "close"}).replace(
        b"\r\n\r\n", b"\r\nAuthorization: " + authorization(world) + b"\r\n\r\n", 1
    )
    async with nothing_changes(admin):
        [answer] = await exchange(client, request)
        message = assert_envelope(answer, status, "forbidden" if status == 403 else "invalid_request")
        assert world.secret[3:] not in message, "the answer repeats the key"


# Requests aiohttp's HTTP parser refuses before any middleware runs

PROTOCOL_CASES: dict[str, Callable[[str, str, dict], bytes]] = {
    "a-header-over-8-KiB": lambda m, p, h: raw_request(m, p, {**h, "X-Padding": "a" * 9000}),
    "an-authorization-header-over-8-KiB": lambda m, p, h: raw_request(
        m, p, {"Authorization": "Bearer " + "a" * 9000}
    ),
    "a-header-name-over-8-KiB": lambda m, p, h: raw_request(m, p, {**h, "X-" + "n" * 9000: "v"}),
    "2000-headers": lambda m, p, h: raw_request(m, p, {**h, **{f"X-H{n}": str(n) for n in range(2000)}}),
    "a-request-line-over-8-KiB": lambda m, p, h: raw_request(m, f"{p}?q={'a' * 9000}", h),
    "a-nul-in-a-header": lambda m, p, h: raw_request(m, p, {**h, "X-Test": "a\x00b"}),
    "a-header-without-a-colon": lambda m, p, h: raw_request(m, p, h).replace(b"Host:", b"Broken\r\nHost:"),
    "http-1.1-without-host": lambda m, p, h: raw_request(m, p, h).replace(b"Host: 127.0.0.1\r\n", b""),
    "a-method-with-a-bracket": lambda m, p, h: raw_request("G[T", p, h),
    "two-content-lengths": lambda m, p, h: raw_request(m, p, {**h, "Content-Length": "2"}).replace(
        b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n{}", 1
    ),
    "content-length-and-chunked": lambda m, p, h: raw_request(
        m, p, {**h, "Content-Length": "2", "Transfer-Encoding": "chunked"}, b"0\r\n\r\n"
    ),
    "a-negative-content-length": lambda m, p, h: raw_request(m, p, {**h, "Content-Length": "-1"}),
    "bad-chunk-size": lambda m, p, h: raw_request(
        m,
        p,
        {**h, "Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        b"zz\r\n{}\r\n0\r\n\r\n",
    ),
    "tls-on-the-http-port": lambda m, p, h: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
}


def endpoint_requests(world: World) -> dict[str, tuple[str, str, dict]]:
    return {
        "create": ("POST", CREATE, auth(OWNER)),
        "rename": ("PATCH", f"{KEYS}/{world.key_id}/update/", auth(OWNER)),
        "subscription": ("PUT", subscription_path(FRESH), service_headers()),
        "usage": ("POST", USAGE, service_headers()),
        "audit": ("GET", AUDIT, service_headers()),
        "verify": ("GET", VERIFY, bearer(world.secret)),
    }


@pytest.mark.parametrize("build", PROTOCOL_CASES.values(), ids=PROTOCOL_CASES.keys())
@pytest.mark.parametrize("endpoint", ["create", "rename", "subscription", "usage", "audit", "verify"])
async def test_a_request_the_http_parser_refuses_gets_the_envelope(client, admin, world, endpoint, build):
    method, path, headers = endpoint_requests(world)[endpoint]
    async with nothing_changes(admin):
        answers = await exchange(client, build(method, path, headers))
        assert answers, "the server closed the connection without an answer"
        for answer in answers:
            assert_envelope(answer, (400, 431), "invalid_request")
            assert answer.headers.get("x-content-type-options") == "nosniff"


async def test_the_cli_runner_answers_parser_errors_with_the_envelope_too(settings, world):
    """`keyledger serve` runs the app with web.run_app, i.e. an AppRunner with the access log class."""
    runner = web.AppRunner(create_app(settings), access_log_class=AccessLog)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(raw_request("GET", VERIFY, {"X-Padding": "a" * 9000}))
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    finally:
        await runner.cleanup()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] in (b"400", b"431"), head
    assert b"content-type: application/json" in head.lower(), head
    assert json.loads(body)["error"]["type"] == "invalid_request"


# Controls: the untouched requests are accepted and stored, so "nothing changed" above means something


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("how", ["plain", "chunked", "gzip", "padded-to-the-limit"])
async def test_control_the_valid_body_is_accepted_and_stored(client, admin, world, endpoint, how):
    account = f"acct_control_{secrets.token_hex(4)}"
    created = await expect(await client.post(CREATE, json={"name": "control"}, headers=auth(account)), 201)
    target = targets(world, account=account, fresh=account, key_id=created["id"])[endpoint]
    body = target.body()
    what = {
        "plain": Send(body),
        "chunked": Send(body, chunked=True),
        "gzip": Send(gzip.compress(body), headers={"Content-Encoding": "gzip"}),
        "padded-to-the-limit": Send(body + b" " * (target.limit - len(body))),
    }[how]
    await settle(admin)
    before = await snapshot(admin)
    response = await send(client, target, what)
    assert response.status in (200, 201, 202), await response.text()
    assert await snapshot(admin) != before


async def test_control_a_valid_key_verifies(client, world):
    response = await client.get(VERIFY, headers=bearer(world.secret))
    assert (await expect(response))["key_id"] == world.key_id


async def test_control_a_valid_audit_query_answers(client, world):
    response = await client.get(
        AUDIT, params={"after": "0", "limit": "10", "account_id": OWNER}, headers=service_headers()
    )
    assert (await expect(response))["data"]


async def test_control_a_valid_account_id_in_the_path_is_accepted(client, admin, world):
    account = f"acct.control-{secrets.token_hex(4)}@example.com"
    body = {"status": "active", "plan": "pro"}
    await expect(await client.put(subscription_path(account), json=body, headers=service_headers()))
    assert await admin.fetchval("SELECT count(*) FROM subscriptions WHERE account_id = $1", account) == 1


async def test_a_repeated_key_anywhere_in_a_full_batch_is_found(client, admin, world):
    """The last of 10,000 events repeats a key: the cheap check on large batches must see it too."""
    batch = usage_batch(world.key_id, events=10_000)
    text = json.dumps(batch)
    cut = text.rindex('"model"')
    spoiled = (text[:cut] + '"mod\\u0065l": "decoy", ' + text[cut:]).encode()
    async with nothing_changes(admin):
        await expect_error(await send(client, targets(world)["usage"], Send(spoiled)), 400, "invalid_request")
