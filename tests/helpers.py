"""Small helpers shared by the verification, usage and projector tests."""

import asyncio
import base64
import contextlib
import hashlib
import inspect
import io
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from events.note import Signer
from service.http.auth import issue_token

# The credentials every test service is configured with (conftest's `settings`, tests/processes.py).
JWT_SECRET = "test-secret-" + "x" * 40
SERVICE_TOKEN = "test-service-token"
# The checkpoints' note signer key of the test services (processes and conftest's `settings`).
CHECKPOINT_SIGNER = Signer("keyledger.local/log", hashlib.sha256(b"keyledger test checkpoint key").digest())
CHECKPOINT_KEY = CHECKPOINT_SIGNER.secret_text()

KEYS = "/api/v1/accounts/user/api-keys"
# Every field of a key object (SPEC: all present on every key object, null when unset).
KEY_FIELDS = {
    *("id", "name", "masked_key", "status", "created_at", "revoked_at", "last_used_at", "usage"),
    *("expires_at", "monthly_spend_limit_chf", "rotated_from", "rotated_to", "revoked_reason"),
}
VERIFY = "/api/v1/auth/verify"
USAGE = "/api/v1/usage/"


def token_for(account_id: str, **kwargs) -> str:
    return issue_token(JWT_SECRET, account_id, **kwargs)


def auth(account_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(account_id)}"}


def subscription_path(account_id: str) -> str:
    return f"/api/v1/internal/accounts/{account_id}/subscription"


def key_path(key_id: str) -> str:
    return f"{KEYS}/{key_id}/"


def service_headers(token: str = SERVICE_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds and a Z, as a gateway would send it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# Responses


async def expect(response, status: int = 200) -> dict:
    """The JSON body of an answer with exactly this status."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def expect_error(response, status: int | tuple[int, ...], type_: str | None = None) -> str:
    """Assert the error envelope `{"error": {"message", "type"}}` (and its type); return the message."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status in statuses, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type"}, body
    assert body["error"]["message"], body
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body["error"]["message"]


# Keys and subscriptions


async def create_key(client, account: str, name: str = "Production backend", **fields) -> dict:
    """Create a key through the API (`fields`: expires_at, monthly_spend_limit_chf); the answer with
    the full secret in `key`."""
    response = await client.post(f"{KEYS}/create/", json={"name": name, **fields}, headers=auth(account))
    return await expect(response, 201)


async def revoke(client, account: str, key_id: str) -> dict:
    return await expect(await client.post(f"{KEYS}/{key_id}/revoke/", headers=auth(account)))


async def view_key(client, account: str, key_id: str) -> dict:
    return await expect(await client.get(key_path(key_id), headers=auth(account)))


async def set_subscription(client, account: str, status: str, plan: str = "pro") -> dict:
    response = await client.put(
        subscription_path(account), json={"status": status, "plan": plan}, headers=service_headers()
    )
    return await expect(response)


async def activate(client, account: str, plan: str = "pro") -> dict:
    return await set_subscription(client, account, "active", plan)


async def deactivate(client, account: str) -> dict:
    return await set_subscription(client, account, "inactive")


async def update_key(client, account: str, key_id: str, body: dict):
    return await client.patch(key_path(key_id) + "update/", json=body, headers=auth(account))


async def rotate_key(client, account: str, key_id: str, body: dict | None = None):
    """POST …/rotate/, with no body at all when `body` is None."""
    return await client.post(key_path(key_id) + "rotate/", json=body, headers=auth(account))


async def list_keys(client, account: str, as_of: str | None = None) -> list[dict]:
    params = {} if as_of is None else {"as_of": as_of}
    return (await expect(await client.get(f"{KEYS}/", params=params, headers=auth(account))))["data"]


async def key_history(client, account: str, key_id: str) -> list[dict]:
    return (await expect(await client.get(key_path(key_id) + "events/", headers=auth(account))))["data"]


async def verify(client, secret: str, method: str = "GET"):
    return await client.request(method, VERIFY, headers=bearer(secret))


async def verify_status(client, secret: str) -> int:
    response = await verify(client, secret)
    await response.read()
    return response.status


async def verdict(client, secret: str) -> tuple[int, str | None]:
    """The status of a verification and its error type (None for a 200)."""
    response = await verify(client, secret)
    body = await response.json()
    return response.status, body.get("error", {}).get("type")


# Usage


def usage_event(
    key_id: str,
    request_id: str,
    cost: str = "0.000150",
    occurred_at: datetime | str | None = None,
    **changes,
) -> dict:
    """One usage report as the gateway sends it; `changes` overrides or adds fields."""
    if occurred_at is None:
        occurred_at = datetime.now(UTC)
    event = {
        "request_id": request_id,
        "key_id": key_id,
        "occurred_at": occurred_at if isinstance(occurred_at, str) else rfc3339(occurred_at),
        "cost_chf": cost,
        "units": 812,
        "endpoint": "/v1/chat/completions",
        "model": "gpt-test",
    }
    event.update(changes)
    return event


async def post_body(client, path: str, body: bytes, headers: dict[str, str]):
    """POST JSON bytes; as a stream, since aiohttp warns about large bodies sent as plain bytes."""
    return await client.post(
        path, data=io.BytesIO(body), headers={**headers, "Content-Type": "application/json"}
    )


async def send_usage(client, events: list[dict], headers: dict | None = None):
    body = json.dumps({"events": events}).encode()
    return await post_body(client, USAGE, body, service_headers() if headers is None else headers)


def chf(amount: Decimal) -> str:
    return f"{amount:.9f}"


# Waiting and database snapshots


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within: float, interval: float = 0.02
) -> float:
    """Poll until the predicate holds; the seconds it took. Fails the test after `within` seconds."""
    started = time.monotonic()
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        elapsed = time.monotonic() - started
        if result:
            return elapsed
        if elapsed > within:
            raise AssertionError(f"condition still false after {elapsed:.2f} s")
        await asyncio.sleep(interval)


async def settle(admin: asyncpg.Connection) -> None:
    """Wait until the app's background projector and tree writer have run and folded every event: they
    write tables on their own (the projector's first batch creates its checkpoint row, the tree writer
    signs a checkpoint of the tree: at once with conftest's settings), which a test comparing tables
    must await."""
    query = """SELECT coalesce((SELECT position FROM projector_checkpoints WHERE projector = 'usage'), -1)
                      >= coalesce((SELECT max(position) FROM events), 0)
                  AND (SELECT last_position FROM merkle_tree_state) >= coalesce((SELECT max(position) FROM events), 0)
                  AND (SELECT max(tree_size) FROM checkpoints) = (SELECT tree_size FROM merkle_tree_state)"""
    await wait_until(lambda: admin.fetchval(query), within=5)


async def table_counts(admin: asyncpg.Connection) -> dict[str, int]:
    """count(*) of every table of the public schema."""
    await settle(admin)  # the background writers (projector, tree writer) fold what came before
    tables = await admin.fetch(
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"""
    )
    assert tables, "no tables found: is the database migrated?"
    return {
        row["table_name"]: await admin.fetchval(f'SELECT count(*) FROM public."{row["table_name"]}"')
        for row in tables
    }


async def table_digests(admin: asyncpg.Connection) -> dict[str, str]:
    """An MD5 of the contents of every table of the public schema: a change of any row shows."""
    await settle(admin)  # the background writers (projector, tree writer) fold what came before
    tables = await admin.fetch(
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"""
    )
    assert tables, "no tables found: is the database migrated?"
    return {
        row["table_name"]: await admin.fetchval(
            f"""SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))
                FROM public."{row["table_name"]}" t"""
        )
        for row in tables
    }


# GitHub's secret-scanning reports

SECRET_SCANNING = "/api/v1/secret-scanning/github/"


class GitHubSigner:
    """A P-256 key pair made for the test, as GitHub holds one: it signs report bodies, and
    `keys_document` is what KEYLEDGER_SECRET_SCANNING_KEYS holds for it."""

    def __init__(self, identifier: str = "test-key-1"):
        self.identifier = identifier
        self.private_key = ec.generate_private_key(ec.SECP256R1())

    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def keys_document(self, *others: "GitHubSigner") -> str:
        entries = [
            {"key_identifier": signer.identifier, "key": signer.public_pem(), "is_current": index == 0}
            for index, signer in enumerate((self, *others))
        ]
        return json.dumps({"public_keys": entries})

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private_key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        return {
            "Github-Public-Key-Identifier": self.identifier,
            "Github-Public-Key-Signature": self.sign(body),
        }


def leak_report(*tokens: str, url: str = "https://github.com/octo/demo/blob/abc123/config.py") -> bytes:
    items = [
        {"token": token, "type": "keyledger_api_key", "url": url, "source": "content"} for token in tokens
    ]
    return json.dumps(items).encode()


@contextlib.asynccontextmanager
async def connections_refused(server_url: str, database: str):
    """The database refuses new connections (existing ones stay) until the block ends."""
    # A database cannot disallow connections to itself: switch it from the server's default one.
    outside = await asyncpg.connect(server_url)
    try:
        await outside.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        try:
            yield
        finally:
            await outside.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    finally:
        await outside.close()
