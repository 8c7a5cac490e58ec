"""SPEC "Leaked keys": GitHub's secret-scanning reports, signed with a P-256 key made for the test,
over real HTTP on a real PostgreSQL."""

import asyncio
import base64
import dataclasses
import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from events import apikey
from service.config import read_secret_scanning_keys
from service.http.app import create_app
from tests.helpers import (
    SECRET_SCANNING,
    GitHubSigner,
    activate,
    auth,
    create_key,
    expect,
    expect_error,
    key_path,
    leak_report,
    post_body,
    revoke,
    table_digests,
    verify_status,
    view_key,
)

ACCOUNT = "acct_leaky"
URL = "https://github.com/octo/demo/blob/abc123/config.py"
SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "sign_secret_scanning_report.py"


@pytest.fixture
def signer() -> GitHubSigner:
    return GitHubSigner()


@pytest.fixture
async def client(aiohttp_client, settings, signer):
    keys = read_secret_scanning_keys(signer.keys_document())
    return await aiohttp_client(create_app(dataclasses.replace(settings, secret_scanning_keys=keys)))


async def report(client, signer: GitHubSigner, body: bytes, headers: dict | None = None):
    return await post_body(
        client, SECRET_SCANNING, body, signer.headers(body) if headers is None else headers
    )


def labels(*pairs: tuple[str, str]) -> list[dict]:
    return [
        {
            "token_hash": hashlib.sha256(token.encode()).hexdigest(),
            "token_type": "keyledger_api_key",
            "label": label,
        }
        for token, label in pairs
    ]


async def live_key(client) -> dict:
    created = await create_key(client, ACCOUNT)
    await activate(client, ACCOUNT)
    assert await verify_status(client, created["key"]) == 200
    return created


async def event_count(admin) -> int:
    return await admin.fetchval("SELECT count(*) FROM events")


async def test_a_live_key_reported_is_revoked_at_once_with_the_url_and_labelled_true_positive(
    client, signer, admin
):
    created = await live_key(client)
    response = await report(client, signer, leak_report(created["key"], url=URL))
    text = await response.text()
    assert await expect(response) == labels((created["key"], "true_positive"))
    assert created["key"] not in text
    assert await verify_status(client, created["key"]) == 403

    history = await expect(await client.get(key_path(created["id"]) + "events/", headers=auth(ACCOUNT)))
    last = history["data"][-1]
    assert last["type"] == "ApiKeyRevoked" and last["actor"] == "secret-scanning"
    assert last["data"]["reason"] == "leaked" and last["data"]["url"] == URL
    key = await view_key(client, ACCOUNT, created["id"])
    assert key["status"] == "revoked"
    assert key["revoked_reason"] == "leaked"
    stored = await admin.fetchval("SELECT string_agg(data::text || metadata::text, '') FROM events")
    assert created["key"] not in stored


async def test_the_same_report_again_and_an_already_revoked_key_change_nothing_more(client, signer, admin):
    first, second = await live_key(client), await create_key(client, ACCOUNT, "second")
    await revoke(client, ACCOUNT, second["id"])
    body = leak_report(first["key"], second["key"])
    expected = labels((first["key"], "true_positive"), (second["key"], "true_positive"))
    assert await expect(await report(client, signer, body)) == expected
    before = await table_digests(admin)
    assert await expect(await report(client, signer, body)) == expected
    assert await table_digests(admin) == before
    revocations = await admin.fetch("SELECT data FROM events WHERE type = 'ApiKeyRevoked' ORDER BY position")
    assert [json.loads(row["data"])["reason"] for row in revocations] == ["user", "leaked"]


async def test_tokens_that_are_not_our_keys_are_false_positives_in_order(client, signer, admin):
    created = await live_key(client)
    made_up = apikey.generate()  # well-formed, checksum and all, but never issued
    wrong_checksum = created["key"][:-1] + ("A" if created["key"][-1] != "A" else "B")
    tokens = ["not a key", made_up, created["key"], wrong_checksum, "", "sk-" + "é" * 49]
    body = json.dumps(
        [{"token": token, "type": "keyledger_api_key", "url": URL, "source": "content"} for token in tokens]
    ).encode()
    answer = await expect(await report(client, signer, body))
    expected = [(token, "false_positive") for token in tokens]
    expected[2] = (created["key"], "true_positive")
    assert [item["label"] for item in answer] == [label for _, label in expected]
    assert answer[:3] == labels(*expected[:3])
    assert await event_count(admin) == 3  # created, subscription, the one revocation


async def test_fields_github_may_add_are_ignored_and_url_and_source_may_be_missing(client, signer):
    created = await live_key(client)
    body = json.dumps([{"token": created["key"], "type": "t", "found_at": "2026-01-01", "extra": {"a": 1}}])
    answer = await expect(await report(client, signer, body.encode()))
    assert [item["label"] for item in answer] == ["true_positive"]
    assert await verify_status(client, created["key"]) == 403


@pytest.mark.parametrize(
    "case",
    ["other body", "other key", "unknown identifier", "no identifier", "no signature", "not base64", "empty"],
)
async def test_a_report_that_is_not_signed_by_a_listed_key_is_401_and_changes_nothing(
    client, signer, admin, case
):
    created = await live_key(client)
    body = leak_report(created["key"])
    headers = signer.headers(body)
    match case:
        case "other body":
            headers = signer.headers(leak_report(apikey.generate()))
        case "other key":
            headers = GitHubSigner(signer.identifier).headers(body)
        case "unknown identifier":
            headers = GitHubSigner("another").headers(body)
        case "no identifier":
            del headers["Github-Public-Key-Identifier"]
        case "no signature":
            del headers["Github-Public-Key-Signature"]
        case "not base64":
            headers["Github-Public-Key-Signature"] = "%%%" + headers["Github-Public-Key-Signature"]
        case "empty":
            headers["Github-Public-Key-Signature"] = ""
    before = await table_digests(admin)
    await expect_error(await report(client, signer, body, headers), 401, "invalid_token")
    assert await table_digests(admin) == before
    assert await verify_status(client, created["key"]) == 200


async def test_every_report_is_refused_while_the_variable_is_unset(aiohttp_client, settings, signer, admin):
    unset = await aiohttp_client(create_app(settings))
    created = await live_key(unset)
    before = await table_digests(admin)
    message = await expect_error(
        await report(unset, signer, leak_report(created["key"])), 401, "invalid_token"
    )
    assert "KEYLEDGER_SECRET_SCANNING_KEYS" in message
    assert await table_digests(admin) == before
    assert await verify_status(unset, created["key"]) == 200


async def test_at_most_1000_tokens_and_1_mib(client, signer, admin):
    created = await live_key(client)
    thousand = [apikey.generate() for _ in range(999)] + [created["key"]]
    answer = await expect(await report(client, signer, leak_report(*thousand)))
    assert len(answer) == 1000 and answer[-1]["label"] == "true_positive"
    before = await table_digests(admin)
    message = await expect_error(
        await report(client, signer, leak_report(*thousand, apikey.generate())), 400, "invalid_request"
    )
    assert "1000" in message
    large = leak_report(apikey.generate(), url="https://github.com/" + "a" * 1024 * 1024)
    await expect_error(await report(client, signer, large), 413, "payload_too_large")
    assert await table_digests(admin) == before


@pytest.mark.parametrize(
    "body",
    [
        b'{"token": "sk-x", "type": "t"}',
        b"[]]",
        b"not json",
        b"\xff\xfe[]",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps([[["sk-"] * 1000] * 50]).encode(),
        json.dumps([{"token": ["sk-"] * 10_000, "type": "t"}]).encode(),
        json.dumps([{"token": 7, "type": "t"}]).encode(),
        json.dumps([{"type": "t"}]).encode(),
        json.dumps([{"token": "sk-\u0000", "type": "t"}]).encode(),
        json.dumps([{"token": "x", "type": "t", "url": "https://github.com/\u0000"}]).encode(),
        b'[{"token": "x", "token": "y", "type": "t"}]',
        b'[{"token": "\\ud800", "type": "t"}]',
    ],
    ids=[
        "object",
        "trailing",
        "not json",
        "not utf-8",
        "deep",
        "nested arrays",
        "huge token array",
        "number",
        "missing token",
        "nul token",
        "nul url",
        "repeated key",
        "lone surrogate",
    ],
)
async def test_a_signed_body_that_is_not_a_report_is_400_and_changes_nothing(client, signer, admin, body):
    created = await live_key(client)
    before = await table_digests(admin)
    await expect_error(await report(client, signer, body), 400, "invalid_request")
    assert await table_digests(admin) == before
    assert await verify_status(client, created["key"]) == 200


async def test_a_signature_made_by_openssl_is_accepted(client, signer, tmp_path):
    """An independent check of the format: the DER signature of `openssl dgst -sha256 -sign`."""
    created = await live_key(client)
    body = leak_report(created["key"])
    (tmp_path / "report.json").write_bytes(body)
    (tmp_path / "private.pem").write_bytes(
        signer.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "dgst", "-sha256", "-sign", "private.pem", "report.json",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    der, _ = await openssl.communicate()
    assert openssl.returncode == 0
    headers = {
        "Github-Public-Key-Identifier": signer.identifier,
        "Github-Public-Key-Signature": base64.b64encode(der).decode(),
    }
    assert await expect(await report(client, signer, body, headers)) == labels(
        (created["key"], "true_positive")
    )


async def run(*command: str, cwd: Path | None = None) -> str:
    process = await asyncio.create_subprocess_exec(*command, cwd=cwd, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0, command
    return out.decode()


async def test_the_documented_script_signs_a_report_that_curl_sends(aiohttp_client, settings, tmp_path):
    """docs/secret-scanning.md's manual test, as written: the script's key document configures the
    service, and the curl line it prints revokes the key."""
    await run(sys.executable, str(SCRIPT), str(tmp_path), "not-a-key")  # makes the key pair
    keys = read_secret_scanning_keys(str(tmp_path / "secret-scanning-keys.json"))
    client = await aiohttp_client(create_app(dataclasses.replace(settings, secret_scanning_keys=keys)))
    created = await live_key(client)
    printed = await run(sys.executable, str(SCRIPT), str(tmp_path), created["key"])
    curl = shlex.split(printed.splitlines()[-1].replace("http://127.0.0.1:8080", str(client.make_url(""))))
    assert json.loads(await run(*curl)) == labels((created["key"], "true_positive"))
    assert await verify_status(client, created["key"]) == 403
