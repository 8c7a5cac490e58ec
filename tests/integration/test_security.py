"""Security checks: secrets compared in constant time and never logged, no JWT algorithm confusion,
security headers on every answer, and CORS for the configured dashboard origin only.

The log check itself runs over the whole test session (tests/log_guard.py); the tests here prove
that it can fail and that it sees what `keyledger serve` logs.
"""

import ast
import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from aiohttp.test_utils import TestServer, make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from events import apikey
from events.note import Signer
from service.app.keycache import KeyCache
from service.config import ConfigError, Settings, from_environment, read_secret_scanning_keys
from service.http.access_log import AccessLog
from service.http.app import create_app
from service.http.auth import TokenVerifier
from service.http.errors import ApiError
from tests import log_guard
from tests.helpers import (
    CHECKPOINT_KEY,
    JWT_SECRET,
    KEYS,
    SECRET_SCANNING,
    SERVICE_TOKEN,
    USAGE,
    VERIFY,
    GitHubSigner,
    activate,
    auth,
    bearer,
    create_key,
    expect,
    expect_error,
    leak_report,
    post_body,
    revoke,
    service_headers,
    subscription_path,
    token_for,
    usage_event,
    wait_until,
)

pytestmark = pytest.mark.server_independent  # HTTP parsing and our code: CI's second pass leaves it out

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "acct_security"
AUDIT = "/api/v1/audit/events"
DASHBOARD = "https://dashboard.example.com"
WRONG_SERVICE_TOKEN = SERVICE_TOKEN[:-1] + "X"  # as long as the right one, wrong in the last place
GITHUB = GitHubSigner()
LEAK_REPORT = leak_report("sk-not-ours")


async def verified_key(client, account: str = ACCOUNT) -> dict:
    await activate(client, account)
    key = await create_key(client, account)

    async def admitted() -> bool:
        return (await client.get(VERIFY, headers=bearer(key["key"]))).status == 200

    await wait_until(admitted, within=5)
    return key


# (a) Secrets are compared in constant time


@pytest.fixture
def compare_digest_calls(monkeypatch) -> list[tuple[bytes, bytes]]:
    """Every hmac.compare_digest call (the real one still answers), as service.auth and
    service.audit_api call it: through the module `hmac`."""
    calls, real = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


SERVICE_CALLS = {
    "subscription": ("PUT", subscription_path(ACCOUNT), {"status": "active", "plan": "pro"}, 200),
    "usage": ("POST", USAGE, {"events": []}, 202),
    "audit": ("GET", AUDIT, None, 200),
}


@pytest.mark.parametrize("endpoint", SERVICE_CALLS)
async def test_the_service_token_is_compared_in_constant_time(client, compare_digest_calls, endpoint):
    method, path, body, success = SERVICE_CALLS[endpoint]
    wrong = await client.request(method, path, json=body, headers=service_headers(WRONG_SERVICE_TOKEN))
    await expect_error(wrong, 401, "invalid_token")
    right = await client.request(method, path, json=body, headers=service_headers())
    assert right.status in (success if isinstance(success, tuple) else (success,)), await right.text()
    for presented in (WRONG_SERVICE_TOKEN, SERVICE_TOKEN):
        assert (presented.encode(), SERVICE_TOKEN.encode()) in compare_digest_calls, compare_digest_calls


async def test_verification_looks_a_key_up_by_its_sha256_digest_only(client, monkeypatch):
    """The key cache is a hash table from the SHA-256 digest of each key to its entry. A lookup hashes
    the digest the caller's key produces; its timing can at most reveal something about stored
    digests, and a digest is worthless to an attacker: finding a key from it means inverting
    SHA-256 on 256 random bits. So a table lookup needs no constant-time comparison, as long as
    the raw key never reaches the cache: this test shows it does not."""
    key = await verified_key(client)
    looked_up: list = []
    real_lookup = KeyCache.key

    def spy(self, digest):
        looked_up.append(digest)
        return real_lookup(self, digest)

    monkeypatch.setattr(KeyCache, "key", spy)
    for presented, status in ((key["key"], 200), (apikey.generate(), 403)):
        assert (await client.get(VERIFY, headers=bearer(presented))).status == status
        assert looked_up[-1] == hashlib.sha256(presented.encode()).digest()
    assert all(isinstance(digest, bytes) and len(digest) == 32 for digest in looked_up), looked_up


async def test_the_database_path_finds_a_key_by_its_digest_through_the_unique_index(
    client, admin, monkeypatch
):
    """When the cache cannot prove it is fresh, verification asks PostgreSQL `WHERE key_digest = $1`:
    a B-tree probe on the unique index, with the digest, never the key (the database does not
    hold the key at all), so the same argument as for the cache holds."""
    key = await verified_key(client)
    revoked = await create_key(client, ACCOUNT, "revoked")
    await revoke(client, ACCOUNT, revoked["id"])
    monkeypatch.setattr(KeyCache, "fresh", property(lambda self: False))
    assert (await client.get(VERIFY, headers=bearer(key["key"]))).status == 200
    assert (await client.get(VERIFY, headers=bearer(revoked["key"]))).status == 403
    rows = [row[0] for row in await admin.fetch("SELECT k::text FROM api_keys k")]
    assert rows and not any(secret["key"][3:] in row for secret in (key, revoked) for row in rows)
    unique_on_digest = await admin.fetchval(
        """SELECT count(*) FROM pg_index i JOIN pg_attribute a
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = 'api_keys'::regclass AND i.indisunique AND i.indnatts = 1
             AND a.attname = 'key_digest'"""
    )
    assert unique_on_digest == 1


CREDENTIAL = re.compile(r"token|secret|password|key_digest", re.I)
DIGESTS = {"digest", "hexdigest"}  # hashlib's, and apikey.digest


def _credential_operand(node: ast.AST) -> bool:
    """The operand names a credential or computes a digest (a len() of one is only a length)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return False
    if isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        if CREDENTIAL.search(name):
            return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and CREDENTIAL.search(node.value):
        return True  # row["key_digest"]
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in DIGESTS:
            return True
    return any(_credential_operand(child) for child in ast.iter_child_nodes(node))


def test_no_code_compares_a_credential_or_a_digest_with_equals():
    """`==` on bytes or str stops at the first difference. Our code compares credentials with
    hmac.compare_digest and finds keys by digest in a dict or an index; this keeps it so."""
    found = []
    for package in ("service", "events", "projections"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Compare)
                    and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops)
                    and any(_credential_operand(side) for side in (node.left, *node.comparators))
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_the_credential_scan_recognises_an_equality_check():
    for source in (
        "token == expected",
        "settings.service_token != presented",
        'row["key_digest"] == digest',
        "hashlib.sha256(key).digest() == stored",
    ):
        [compare] = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Compare)]
        assert any(_credential_operand(side) for side in (compare.left, *compare.comparators)), source
    [compare] = [node for node in ast.walk(ast.parse("len(token) != 3")) if isinstance(node, ast.Compare)]
    assert not _credential_operand(compare.left)


# (b) Tokens and keys never in logs


SECRET_LINES = {
    "an sk- API key": f"created key {apikey.generate()} for acct_1",
    "a JWT": f"Authorization: Bearer {token_for('acct_1')}",
    "the test service token": f"service call with {SERVICE_TOKEN}",
    "the test JWT secret": f"secret is {JWT_SECRET}",
    "a note signer key": f"signing with {Signer.generate('keyledger.local/log').secret_text()}",
    "the test checkpoint key": f"seed {CHECKPOINT_KEY.rsplit('+', 1)[1]}",
}


@pytest.mark.parametrize("kind", SECRET_LINES)
def test_the_log_guard_reports_a_secret_and_does_not_repeat_it(kind):
    line = SECRET_LINES[kind]
    assert kind in log_guard.secrets_in(line)
    guard = log_guard.LogGuard()
    guard.scan(f"first line\n{line}", "the log of service.test", during="this test")
    [finding] = guard.findings
    assert kind in finding.what and "<redacted>" in finding.line
    assert not log_guard.secrets_in(str(finding))


@pytest.mark.parametrize(
    "line",
    [
        "masked_key sk-***...9fQz, id key_0123456789abcdefghijkl",
        f"digest {hashlib.sha256(b'x').hexdigest()}",
        '127.0.0.1 "GET /api/v1/accounts/user/api-keys/ HTTP/1.1" 401 98 "-" "Python/3.11 aiohttp/3.14"',
        "sk-too-short and eyJhbGciOiJIUzI1NiJ9 alone",
    ],
)
def test_the_log_guard_leaves_lines_without_secrets_alone(line):
    assert log_guard.secrets_in(line) == []


def test_the_log_guard_hears_debug_lines_of_our_loggers_and_the_access_log():
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, log_guard._Handler)]
    assert len(handlers) == 1 and handlers[0].level == logging.DEBUG
    for name in ("service.app", "projections.projector", "aiohttp.access", "aiohttp.server"):
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG), name


@pytest.fixture
async def access_logged(aiohttp_client, settings, caplog):
    """A server with the access log of `keyledger serve`."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    server = TestServer(create_app(settings))
    await server.start_server(access_log_class=AccessLog)
    return await aiohttp_client(server)


async def test_the_access_log_holds_no_credential_even_one_put_in_the_url(access_logged, caplog):
    client = access_logged
    key = await verified_key(client)
    jwt_token = token_for(ACCOUNT)
    caplog.clear()
    requests = [
        ("GET", VERIFY, bearer(apikey.generate())),  # 403, logged
        ("GET", f"{KEYS}/", auth(ACCOUNT)),
        ("GET", f"{KEYS}/{key['key']}/", auth(ACCOUNT)),  # the key pasted where its id belongs
        ("GET", f"{AUDIT}?api_key={key['key']}&limit=1", service_headers()),
        ("GET", f"{AUDIT}?access_token={jwt_token}", service_headers()),
        ("GET", f"{AUDIT}?token={SERVICE_TOKEN}&after=0", service_headers()),
        ("GET", f"/healthz?key={key['key']}", {}),
    ]
    for method, path, headers in requests:
        await (await client.request(method, path, headers=headers)).read()
    lines = [record.getMessage() for record in caplog.records if record.name == "aiohttp.access"]
    assert len(lines) == len(requests), lines
    for line in lines:
        assert not log_guard.secrets_in(line), line
    assert "after=0" in lines[5] and "limit=1" in lines[3], "what is not a credential stays"


@pytest.mark.parametrize(
    "request_bytes",
    [
        lambda key: f"GET {VERIFY} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\x01\r\n\r\n",
        lambda key: f"GET {KEYS}/{key}/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Bad\r\n\r\n",
        lambda key: f"GET /healthz?token={key} HTTX/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["bad-char-in-authorization", "header-without-colon", "bad-version-key-in-query"],
)
async def test_a_request_the_http_parser_refuses_is_logged_without_its_bytes(
    aiohttp_server, settings, caplog, request_bytes
):
    """aiohttp's own handler logs the offending line, Authorization header included."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    server = await aiohttp_server(create_app(settings))
    key = apikey.generate()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_bytes(key).encode())
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.split()[1] == b"400" and b"x-content-type-options: nosniff" in head, answer
    assert caplog.records, "the refusal is logged"
    for record in caplog.records:
        assert not log_guard.secrets_in(logging.Formatter().format(record)), record.getMessage()


# (c) JWT algorithm confusion


def _b64(data: bytes) -> bytes:
    return jwt.utils.base64url_encode(data)


def forged(header: dict, sign=lambda signing_input: b"") -> str:
    """A token built by hand: PyJWT would refuse to make most of these."""
    claims = {"sub": "attacker", "account_id": "acct_victim", "exp": int(time.time()) + 600}
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(claims).encode())
    return (signing_input + b"." + _b64(sign(signing_input))).decode()


def hmac_with(secret: bytes, digest=hashlib.sha256):
    return lambda signing_input: hmac.new(secret, signing_input, digest).digest()


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())
CLAIMS = {"sub": "attacker", "account_id": "acct_victim", "exp": int(time.time()) + 3600}


def forgeries(private_key) -> dict[str, str]:
    """Tokens that must be refused by a verifier configured with private_key's public key."""
    pem, der = public_pem(private_key), public_der(private_key)
    attacker = ATTACKER_RSA if isinstance(private_key, rsa.RSAPrivateKey) else ATTACKER_EC
    algorithm = "RS256" if isinstance(private_key, rsa.RSAPrivateKey) else "ES256"
    other, other_algorithm = (
        ("RS512", RSAAlgorithm(RSAAlgorithm.SHA512))
        if algorithm == "RS256"
        else ("ES384", ECAlgorithm(ECAlgorithm.SHA384))
    )
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(attacker.public_key()))
    return {
        "alg none": forged({"alg": "none", "typ": "JWT"}),
        "alg None": forged({"alg": "None"}),
        "alg NONE with a signature": forged({"alg": "NONE"}, hmac_with(b"x")),
        "no alg": forged({"typ": "JWT"}),
        "HS256 with the PEM public key as secret": forged({"alg": "HS256"}, hmac_with(pem)),
        "HS256 with the PEM, trimmed": forged({"alg": "HS256"}, hmac_with(pem.strip())),
        "HS384 with the PEM": forged({"alg": "HS384"}, hmac_with(pem, hashlib.sha384)),
        "HS512 with the PEM": forged({"alg": "HS512"}, hmac_with(pem, hashlib.sha512)),
        "HS256 with the DER public key": forged({"alg": "HS256"}, hmac_with(der)),
        "RS256 from another key": jwt.encode(CLAIMS, ATTACKER_RSA, algorithm="RS256"),
        "ES256 from another key": jwt.encode(CLAIMS, ATTACKER_EC, algorithm="ES256"),
        "another key, embedded as jwk": jwt.encode(
            CLAIMS, attacker, algorithm=algorithm, headers={"jwk": jwk}
        ),
        "another key, named by jku and kid": jwt.encode(
            CLAIMS, attacker, algorithm=algorithm, headers={"jku": "https://evil.example/jwks", "kid": "1"}
        ),
        "the right key, another algorithm": forged(
            {"alg": other}, lambda m: other_algorithm.sign(m, private_key)
        ),
    }


CONFIGURED = {"RS256": RSA_KEY, "ES256": EC_KEY}


@pytest.mark.parametrize("configured", CONFIGURED)
def test_a_token_that_picks_its_own_algorithm_or_key_is_refused(configured):
    private_key = CONFIGURED[configured]
    verifier = TokenVerifier(Settings(jwt_public_key=public_pem(private_key).decode()))
    assert verifier.verify(jwt.encode(CLAIMS, private_key, algorithm=configured)).account_id == "acct_victim"
    for name, token in forgeries(private_key).items():
        with pytest.raises(ApiError) as refused:
            verifier.verify(token)
        assert (refused.value.status, refused.value.type) == (401, "invalid_token"), name


def test_with_an_hs256_secret_only_hs256_tokens_with_that_secret_pass():
    verifier = TokenVerifier(Settings(jwt_secret=JWT_SECRET))
    assert verifier.verify(token_for("acct_victim")).account_id == "acct_victim"
    for name, token in {
        "alg none": forged({"alg": "none"}),
        "HS512 with the secret": forged({"alg": "HS512"}, hmac_with(JWT_SECRET.encode(), hashlib.sha512)),
        "RS256": jwt.encode(CLAIMS, ATTACKER_RSA, algorithm="RS256"),
        "ES256": jwt.encode(CLAIMS, ATTACKER_EC, algorithm="ES256"),
        "HS256 with another secret": forged({"alg": "HS256"}, hmac_with(b"guess")),
    }.items():
        with pytest.raises(ApiError) as refused:
            verifier.verify(token)
        assert refused.value.status == 401, name


async def test_every_forged_token_is_a_401_envelope_over_http(aiohttp_client, settings):
    """Through the service, an ES256 header against an RSA key once ended in a 500."""
    client = await aiohttp_client(
        create_app(replace(settings, jwt_secret=None, jwt_public_key=public_pem(RSA_KEY).decode()))
    )
    for name, token in forgeries(RSA_KEY).items():
        response = await client.get(f"{KEYS}/", headers=bearer(token))
        assert response.headers.get("WWW-Authenticate") == 'Bearer error="invalid_token"', name
        await expect_error(response, 401, "invalid_token")


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        public_pem(ec.generate_private_key(ec.SECP384R1())).decode(),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ],
    ids=["garbage", "P-384", "certificate"],
)
def test_a_public_key_that_cannot_verify_rs256_or_es256_stops_the_start(pem):
    with pytest.raises(ConfigError, match="KEYLEDGER_JWT_PUBLIC_KEY"):
        TokenVerifier(Settings(jwt_public_key=pem))


# (d) Security headers on every answer


async def _headers_world(client) -> dict:
    """Keys and tokens for a request to every route, in each outcome."""
    key = await verified_key(client)
    other = await create_key(client, ACCOUNT, "to revoke")
    await revoke(client, ACCOUNT, other["id"])
    unsubscribed = await create_key(client, "acct_security_unsubscribed")
    return {"key": key, "revoked": other, "unsubscribed": unsubscribed}


def _requests(world: dict) -> list[tuple[str, str, dict, object, int]]:
    """(method, path, headers, body, expected status), in an order that makes each outcome. A body is
    sent as JSON; bytes as they are."""
    key_id, revoked_id = world["key"]["id"], world["revoked"]["id"]
    owner, auditor = auth(ACCOUNT), {"Authorization": f"Bearer {token_for('acct_a', roles=['auditor'])}"}
    preflight = {"Origin": DASHBOARD, "Access-Control-Request-Method": "POST"}
    return [
        ("POST", f"{KEYS}/create/", owner, {"name": "new"}, 201),
        ("POST", f"{KEYS}/create/", {}, {"name": "new"}, 401),
        ("POST", f"{KEYS}/create/", bearer("not.a.jwt"), {"name": "new"}, 401),
        ("POST", f"{KEYS}/create/", owner, {"name": ""}, 400),
        ("POST", f"{KEYS}/create/", owner, b'{"name": "%s"}' % (b"x" * 1024 * 1024), 413),
        ("GET", f"{KEYS}/", owner, None, 200),
        ("GET", f"{KEYS}/{key_id}/", owner, None, 200),
        ("GET", f"{KEYS}/key_unknown/", owner, None, 404),
        ("PATCH", f"{KEYS}/{key_id}/update/", owner, {"name": "renamed"}, 200),
        ("PATCH", f"{KEYS}/{revoked_id}/update/", owner, {"name": "renamed"}, 409),
        ("POST", f"{KEYS}/{revoked_id}/revoke/", owner, None, 200),
        ("GET", f"{KEYS}/{key_id}/events/", owner, None, 200),
        ("POST", f"{KEYS}/{key_id}/rotate/", owner, {"grace_period_seconds": 3600}, 201),
        ("POST", f"{KEYS}/{key_id}/rotate/", owner, None, 409),  # rotated already
        ("DELETE", f"{KEYS}/{key_id}/", owner, None, 405),
        ("GET", VERIFY, bearer(world["key"]["key"]), None, 200),
        ("POST", VERIFY, bearer(world["key"]["key"]), None, 200),
        ("GET", VERIFY, {}, None, 401),
        ("GET", VERIFY, bearer("sk-nope"), None, 403),
        ("GET", VERIFY, bearer(world["unsubscribed"]["key"]), None, 402),
        ("POST", USAGE, service_headers(), {"events": [usage_event(key_id, "req-1")]}, 202),
        ("POST", USAGE, service_headers(), {"events": [usage_event("key_unknown", "req-2")]}, 422),
        ("POST", USAGE, service_headers(WRONG_SERVICE_TOKEN), {"events": []}, 401),
        ("PUT", subscription_path("acct_b"), service_headers(), {"status": "active"}, 200),
        ("PUT", subscription_path("acct_b"), owner, {"status": "active"}, 401),
        ("GET", AUDIT, service_headers(), None, 200),
        ("GET", AUDIT, auditor, None, 200),
        ("GET", AUDIT, owner, None, 403),
        ("GET", f"{AUDIT}?limit=0", service_headers(), None, 400),
        ("GET", "/api/v1/audit/checkpoint", service_headers(), None, 200),
        ("GET", "/api/v1/audit/checkpoint?tree_size=x", auditor, None, 400),
        ("GET", "/api/v1/audit/proof/inclusion?leaf_index=0&tree_size=1", auditor, None, 200),
        ("GET", "/api/v1/audit/proof/consistency?first=1&second=1", service_headers(), None, 200),
        ("GET", "/api/v1/audit/proof/consistency?first=1", service_headers(), None, 400),
        ("GET", "/healthz", {}, None, 200),
        ("HEAD", "/healthz", {}, None, 200),
        ("POST", "/healthz", {}, None, 405),
        ("GET", "/readyz", {}, None, 200),
        ("GET", "/metrics", {}, None, 200),
        ("GET", "/openapi.json", {}, None, 200),
        ("GET", "/", {}, None, 200),
        ("GET", "/dashboard/dashboard.js", {}, None, 200),
        ("GET", "/dashboard/nowhere.js", {}, None, 404),
        ("GET", "/nowhere", {}, None, 404),
        ("GET", "/api/v1/nowhere", {}, None, 404),
        ("OPTIONS", f"{KEYS}/create/", preflight, None, 204),
        ("OPTIONS", f"{KEYS}/create/", {**preflight, "Origin": "https://evil.example"}, None, 403),
        ("POST", SECRET_SCANNING, GITHUB.headers(LEAK_REPORT), LEAK_REPORT, 200),
        ("POST", SECRET_SCANNING, {}, LEAK_REPORT, 401),
    ]


async def test_every_answer_has_nosniff_and_every_api_answer_no_store(aiohttp_client, settings):
    github_keys = read_secret_scanning_keys(GITHUB.keys_document())
    configured = replace(settings, dashboard_origin=DASHBOARD, secret_scanning_keys=github_keys)
    client = await aiohttp_client(create_app(configured))
    world = await _headers_world(client)
    answered_routes = set()
    for method, path, headers, body, status in _requests(world):
        if isinstance(body, bytes):  # as a stream: aiohttp warns about a large body given as bytes
            response = await post_body(client, path, body, headers)
        else:
            response = await client.request(method, path, headers=headers, json=body)
        text = await response.text()
        what = f"{method} {path} -> {response.status}"
        assert response.status == status, f"{what}: {text[:300]}"
        assert response.headers.get("X-Content-Type-Options") == "nosniff", what
        if path.startswith("/api/"):
            assert response.headers.get("Cache-Control") == "no-store", what
        if status == 201:
            assert "key" in json.loads(text), "the create answer carries the key"
        if status < 300 and method != "OPTIONS":
            match = await client.app.router.resolve(make_mocked_request(method, path.split("?")[0]))
            answered_routes.add((method, match.route.resource.canonical))
    every_route = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert every_route <= answered_routes, (
        f"routes with no successful request here: {every_route - answered_routes}"
    )


# (e) CORS: the dashboard origin only


@pytest.fixture
async def dashboard_client(aiohttp_client, settings):
    return await aiohttp_client(create_app(replace(settings, dashboard_origin=DASHBOARD)))


def cors_headers(response) -> dict[str, str]:
    return {
        name: value for name, value in response.headers.items() if name.lower().startswith("access-control-")
    }


async def test_the_dashboard_origin_may_read_answers_and_errors(dashboard_client):
    origin = {"Origin": DASHBOARD}
    created = await dashboard_client.post(
        f"{KEYS}/create/", json={"name": "from the dashboard"}, headers={**auth(ACCOUNT), **origin}
    )
    await expect(created, 201)
    refused = await dashboard_client.get(f"{KEYS}/", headers=origin)
    await expect_error(refused, 401, "authentication_required")
    for response in (created, refused):
        assert cors_headers(response) == {"Access-Control-Allow-Origin": DASHBOARD}  # no credentials mode
        assert "Origin" in response.headers.get("Vary", "")


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PUT"])
async def test_a_preflight_from_the_dashboard_is_answered(dashboard_client, method):
    response = await dashboard_client.options(
        f"{KEYS}/key_x/update/",
        headers={
            "Origin": DASHBOARD,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        },
    )
    assert response.status == 204 and await response.read() == b""
    assert response.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert method in response.headers["Access-Control-Allow-Methods"].split(", ")
    allowed_headers = {h.lower() for h in response.headers["Access-Control-Allow-Headers"].split(", ")}
    assert allowed_headers == {"authorization", "content-type", "x-request-id"}
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response.headers


OTHER_ORIGINS = [
    "https://evil.example",
    "http://dashboard.example.com",  # another scheme
    "https://dashboard.example.com:8443",  # another port
    "https://dashboard.example.com.evil.example",
    "https://DASHBOARD.example.com",
    "null",  # a sandboxed frame or a file:// page
]


@pytest.mark.parametrize("origin", OTHER_ORIGINS)
async def test_any_other_origin_gets_no_cors_header_and_its_preflight_a_403(dashboard_client, origin):
    answer = await dashboard_client.get(f"{KEYS}/", headers={**auth(ACCOUNT), "Origin": origin})
    await expect(answer)
    assert cors_headers(answer) == {}
    preflight = await dashboard_client.options(
        f"{KEYS}/create/", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    message = await expect_error(preflight, 403, "forbidden")
    assert cors_headers(preflight) == {}
    assert DASHBOARD in message and "only" in message
    assert not log_guard.secrets_in(message) and SERVICE_TOKEN not in message


async def test_without_a_configured_origin_no_origin_is_allowed(client):
    answer = await client.get(f"{KEYS}/", headers={**auth(ACCOUNT), "Origin": DASHBOARD})
    await expect(answer)
    assert cors_headers(answer) == {} and "Vary" not in answer.headers
    preflight = await client.options(
        f"{KEYS}/create/", headers={"Origin": DASHBOARD, "Access-Control-Request-Method": "POST"}
    )
    assert "KEYLEDGER_DASHBOARD_ORIGIN" in await expect_error(preflight, 403, "forbidden")


async def test_an_options_request_that_is_no_preflight_is_a_405(dashboard_client):
    await expect_error(await dashboard_client.options(f"{KEYS}/"), 405, "method_not_allowed")


def test_the_dashboard_origin_is_read_from_the_environment():
    settings = from_environment({"KEYLEDGER_DASHBOARD_ORIGIN": DASHBOARD, "KEYLEDGER_JWT_SECRET": "s" * 48})
    assert settings.dashboard_origin == DASHBOARD
    assert from_environment({"KEYLEDGER_JWT_SECRET": "s" * 48}).dashboard_origin is None


@pytest.mark.parametrize(
    ("configured", "suggestion"),
    [
        ("https://dashboard.example.com/", "https://dashboard.example.com"),
        ("https://Dashboard.example.com", "https://dashboard.example.com"),
        ("https://dashboard.example.com:443", "https://dashboard.example.com"),
        ("https://dashboard.example.com/app?x=1", "https://dashboard.example.com"),
        ("*", None),
        ("dashboard.example.com", None),
        ("null", None),
    ],
)
def test_a_dashboard_origin_that_a_browser_never_sends_stops_the_start(configured, suggestion):
    with pytest.raises(ConfigError) as refused:
        from_environment({"KEYLEDGER_DASHBOARD_ORIGIN": configured})
    message = str(refused.value)
    assert "KEYLEDGER_DASHBOARD_ORIGIN" in message and repr(configured) in message
    if suggestion:
        assert f"Did you mean {suggestion}?" in message


def test_the_log_guard_lets_only_the_development_banner_lines_through():
    token = token_for("acct_demo")
    guard = log_guard.LogGuard()
    banner = f"  export TOKEN={token}\nOpen the dashboard: http://127.0.0.1:8080/#token={token}"
    guard.scan(f"{banner}\nINFO service.x: the token {token}", "the file serve.log")
    # The same link anywhere else (an access log, a redirect, a message) is still a secret in a log.
    guard.scan(f"INFO aiohttp.access: GET http://127.0.0.1:8080/#token={token}", "the file serve.log")
    assert [finding.line for finding in guard.findings] == [
        "INFO service.x: the token <redacted>",
        "INFO aiohttp.access: GET http://127.0.0.1:8080/#token=<redacted>",
    ]
