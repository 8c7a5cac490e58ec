"""`GET /openapi.json`: the OpenAPI 3.1 document, generated from the request and response structs.

OPERATIONS is the one list of what the API offers; tests/test_openapi.py fails when the app serves a
route this list does not describe, and schemathesis fuzzes the service from the document.
"""

from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from events.apikey import KEY_ID_PATTERN
from events.rules import ACCOUNT_ID_PATTERN, ACCOUNT_ID_RULE
from events.usage import UsageBatch
from service.http import responses
from service.http.requests import CreateKeyBody, RotateKeyBody, UpdateKeyBody
from service.http.responses import ErrorEnvelope
from service.http.routes import checkpoints, dashboard
from service.http.routes.keys import BASE
from service.http.routes.secret_scanning import (
    IDENTIFIER_HEADER,
    REPORT_PATH,
    SIGNATURE_HEADER,
    Labels,
    Report,
)
from service.http.routes.subscriptions import Subscription

routes = web.RouteTableDef()

JWT, API_KEY, SERVICE = "accountJwt", "apiKey", "serviceToken"

_ERRORS = {
    400: "The request breaks a rule of the API: not JSON, a missing, unknown or mistyped field, a name, "
    "time or amount outside its rules, a bad path or query parameter; the message names the field.",
    401: "No credentials, or credentials that are not valid (see WWW-Authenticate).",
    402: "The key is valid but its account has no active subscription (subscription_required), or the "
    "key's cost this UTC month has reached its monthly_spend_limit_chf (spend_limit_reached).",
    403: "The key is invalid or revoked (forbidden), or past its expires_at (key_expired), or the caller "
    "lacks the role.",
    404: "No such key in the caller's account (another account's key answers the same).",
    409: "The 5-key limit is reached (key_limit_reached), or the key is revoked (key_revoked), expired "
    "(key_expired) or already rotated (key_rotated, the message names the key that replaced it).",
    413: "The body is over the limit: 1 MiB, or 8 MiB for usage batches.",
    415: "The body is not sent as application/json.",
    422: "The request is well-formed, but the state of the log refuses it.",
    503: "The database cannot be reached; retry after the Retry-After seconds.",
}
_BODY_ERRORS = (400, 413, 415)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    answer: type | None  # the success body; None: described by `content` below
    status: int = 200
    security: tuple[str, ...] = ()
    body: type | None = None
    errors: tuple[int, ...] = ()
    parameters: tuple[dict, ...] = ()
    content: dict = field(default_factory=dict)  # a success body that is not a JSON struct
    headers: dict = field(default_factory=dict)
    error_notes: dict = field(default_factory=dict)  # status -> description, where _ERRORS' does not fit
    body_required: bool = True  # False: the body may be left out (its defaults apply)


def _path(name: str, description: str, pattern: str) -> dict:
    schema = {"type": "string", "pattern": pattern}
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _query(name: str, description: str, schema: dict, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


_SIZE = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
KEY_ID = _path("key_id", "the key's id, as the create answer gives it", KEY_ID_PATTERN)
DASHBOARD_FILE = {
    "name": "file", "in": "path", "required": True, "description": "one of the page's files",
    "schema": {"type": "string", "enum": sorted(dashboard.FILES)},
}  # fmt: skip
_DASHBOARD_TYPES = {
    content_type.split(";")[0]: {"schema": {"type": "string"}} for _, content_type in dashboard.FILES.values()
}
ACCOUNT_ID = _path("account_id", f"the account's id: {ACCOUNT_ID_RULE}", ACCOUNT_ID_PATTERN)
_VERIFIED_HEADERS = {
    "X-Keyledger-Key-Id": {"schema": {"type": "string"}, "description": "the key's id, for the gateway"},
    "X-Keyledger-Account-Id": {"schema": {"type": "string"}, "description": "the key's account"},
}
_VERIFY = dict(
    answer=responses.Verified, security=(API_KEY,), errors=(401, 402, 403, 503), headers=_VERIFIED_HEADERS
)

_SIGNATURE_HEADERS = (
    {
        "name": IDENTIFIER_HEADER, "in": "header", "required": True,
        "description": "which key of KEYLEDGER_SECRET_SCANNING_KEYS signed the body", "schema": {"type": "string"},
    },
    {
        "name": SIGNATURE_HEADER, "in": "header", "required": True,
        "description": "ECDSA P-256 / SHA-256 signature of the raw body, base64 DER", "schema": {"type": "string"},
    },
)  # fmt: skip

OPERATIONS = (
    Operation(
        "post", f"{BASE}/create/", "Create a key; the answer holds the full key, this once",
        responses.CreatedKey, 201, (JWT,), CreateKeyBody, (*_BODY_ERRORS, 401, 409, 503),
    ),
    Operation(
        "get", f"{BASE}/", "List the account's keys, newest first, revoked included",
        responses.KeyList, 200, (JWT,), errors=(400, 401, 422, 503),
        parameters=(_query("as_of", "the keys as they stood at this past RFC 3339 time", {"type": "string", "format": "date-time"}),),
        error_notes={422: "as_of is later than the database's clock: the answer for it could still change."},
    ),
    Operation(
        "get", f"{BASE}/{{key_id}}/", "View a key with its usage",
        responses.KeyObject, 200, (JWT,), errors=(401, 404, 503), parameters=(KEY_ID,),
    ),
    Operation(
        "patch", f"{BASE}/{{key_id}}/update/", "Change a key's name, expiry or monthly spend limit",
        responses.KeyObject, 200, (JWT,), UpdateKeyBody, (*_BODY_ERRORS, 401, 404, 409, 503), (KEY_ID,),
    ),
    Operation(
        "post", f"{BASE}/{{key_id}}/rotate/",
        "Replace a key: the new one (shown this once) gets its name and limit; the old one verifies "
        "through the grace period, then expires",
        responses.CreatedKey, 201, (JWT,), RotateKeyBody, (*_BODY_ERRORS, 401, 404, 409, 503), (KEY_ID,),
        body_required=False,
    ),
    Operation(
        "post", f"{BASE}/{{key_id}}/revoke/", "Revoke a key (again: a no-op)",
        responses.KeyObject, 200, (JWT,), errors=(401, 404, 503), parameters=(KEY_ID,),
    ),
    Operation(
        "get", f"{BASE}/{{key_id}}/events/", "The key's lifecycle events, oldest first",
        responses.KeyHistory, 200, (JWT,), errors=(400, 401, 404, 503),
        parameters=(KEY_ID, _query("proof", "true: add each event's leaf_index, hash and inclusion_proof against the signed checkpoint carried", {"type": "string", "enum": ["true", "false"]})),
    ),
    Operation("get", "/api/v1/auth/verify", "Verify a customer's sk- key (gateway hot path)", **_VERIFY),
    Operation("post", "/api/v1/auth/verify", "Verify a customer's sk- key (gateway hot path)", **_VERIFY),
    Operation(
        "post", "/api/v1/usage/", "Report usage of verified requests; request_id makes it idempotent",
        responses.UsageAccepted, 202, (SERVICE,), UsageBatch, (*_BODY_ERRORS, 401, 422, 503),
        error_notes={
            400: "An event breaks a rule of the API (a missing or mistyped field, a cost_chf that is not a "
            "non-negative decimal string with at most 9 places); the message names events[i] and the field. "
            "Nothing of the batch is stored.",
            422: "A well-formed event names a key keyledger does not hold, or its occurred_at is more than "
            "5 minutes ahead or 35 days back; the message names events[i]. Nothing of the batch is stored.",
        },
    ),
    Operation(
        "put", "/api/v1/internal/accounts/{account_id}/subscription", "Turn a subscription on or off",
        responses.SubscriptionState, 200, (SERVICE,), Subscription, (*_BODY_ERRORS, 401, 503),
        (ACCOUNT_ID,),
    ),
    Operation(
        "get", "/api/v1/audit/events", "The event log in order, with its hash chain",
        responses.AuditPage, 200, (SERVICE, JWT), errors=(400, 401, 403, 503),
        parameters=(
            _query("after", "read events after this position", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}),
            _query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 10_000}),
            _query("account_id", "only this account's events", {"type": "string", "pattern": ACCOUNT_ID_PATTERN}),
        ),
    ),
    Operation(
        "get", "/api/v1/audit/checkpoint", "A signed checkpoint (C2SP tlog-checkpoint) of the log's Merkle tree",
        None, 200, (SERVICE, JWT), errors=(400, 401, 403, 404, 503),
        parameters=(_query("tree_size", "the kept checkpoint of this size (default: the newest)", _SIZE),),
        content={"text/plain": {"schema": {"type": "string"}}},
        error_notes={400: "tree_size is not a whole number, or is beyond the log.", 404: "No checkpoint of that tree_size was made."},
    ),
    Operation(
        "get", "/api/v1/audit/proof/inclusion", "RFC 9162 inclusion proof of leaf leaf_index in the tree of tree_size leaves",
        checkpoints.InclusionProof, 200, (SERVICE, JWT), errors=(400, 401, 403, 503),
        parameters=(_query("leaf_index", "the event's leaf (0-based, in position order)", _SIZE, True), _query("tree_size", "the tree's size", _SIZE, True)),
        error_notes={400: "A parameter is missing or not a whole number, leaf_index ≥ tree_size, or tree_size is beyond the log."},
    ),
    Operation(
        "get", "/api/v1/audit/proof/consistency", "RFC 9162 consistency proof from the tree of first leaves to that of second",
        checkpoints.ConsistencyProof, 200, (SERVICE, JWT), errors=(400, 401, 403, 503),
        parameters=(_query("first", "the older tree's size (1 or more)", _SIZE, True), _query("second", "the newer tree's size", _SIZE, True)),
        error_notes={400: "A parameter is missing or not a whole number, first < 1, first > second, or second is beyond the log."},
    ),
    Operation(
        "post", REPORT_PATH, "GitHub's secret-scanning report: revoke leaked keys, label each token",
        Labels, 200, (), Report, (400, 401, 413), _SIGNATURE_HEADERS,
        error_notes={
            400: "The body is not a JSON array of at most 1,000 {token, type, url, source} objects of strings, "
            "or a field holds NUL; the message names the item and field. Nothing is revoked.",
            401: "The signature headers are missing, name an unknown key or do not verify over the raw body, "
            "or KEYLEDGER_SECRET_SCANNING_KEYS is unset. Nothing is read or revoked.",
            413: "The body is over 1 MiB.",
        },
    ),
    Operation("get", "/healthz", "Liveness: the process answers", responses.Health),
    Operation("get", "/readyz", "Readiness: database reachable, migrations applied", responses.Health,
              errors=(503,)),
    Operation(
        "get", "/metrics", "Prometheus metrics (text exposition format)", None,
        content={"text/plain": {"schema": {"type": "string"}}},
    ),
    Operation(
        "get", "/openapi.json", "This document", None,
        content={"application/json": {"schema": {"type": "object"}}},
    ),
    Operation(
        "get", "/", "The API Keys page (it signs in with a JWT in the URL fragment: /#token=…)", None,
        content={"text/html": {"schema": {"type": "string"}}},
    ),
    Operation(
        "get", "/dashboard/{file}", "A file of the API Keys page", None,
        errors=(404,), parameters=(DASHBOARD_FILE,), content=_DASHBOARD_TYPES,
        error_notes={404: "The page has no file of that name (it serves exactly the three listed)."},
    ),
)  # fmt: skip

_SECURITY_SCHEMES = {
    JWT: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The account system's JWT (HS256, or RS256/ES256); `sub`, `exp` required; "
        "`account_id` defaults to `sub`; the audit log needs the role `auditor`.",
    },
    API_KEY: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "sk-…",
        "description": "A customer's API key.",
    },
    SERVICE: {
        "type": "http",
        "scheme": "bearer",
        "description": "KEYLEDGER_SERVICE_TOKEN, held by the gateway and the billing system.",
    },
}


def _json(reference: dict) -> dict:
    return {"application/json": {"schema": reference}}


def _operation(operation: Operation, refs: dict[type, dict]) -> dict:
    success: dict[str, Any] = {"description": operation.summary}
    success["content"] = operation.content or _json(refs[operation.answer])
    if operation.headers:
        success["headers"] = operation.headers
    answers = {str(operation.status): success}
    for status in sorted({*operation.errors, *((401,) if operation.security else ())}):
        description = operation.error_notes.get(status, _ERRORS[status])
        answers[str(status)] = {"description": description, "content": _json(refs[ErrorEnvelope])}
    described: dict[str, Any] = {
        "operationId": f"{operation.method}_{operation.path}",
        "summary": operation.summary,
        "responses": answers,
    }
    if operation.parameters:
        described["parameters"] = list(operation.parameters)
    if operation.body is not None:
        described["requestBody"] = {
            "required": operation.body_required,
            "content": _json(refs[operation.body]),
        }
    if operation.security:
        described["security"] = [{scheme: []} for scheme in operation.security]
    return described


def document() -> dict:
    structs = {op.answer for op in OPERATIONS if op.answer} | {op.body for op in OPERATIONS if op.body}
    ordered = [ErrorEnvelope, *sorted(structs, key=lambda struct: struct.__name__)]
    schemas, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    refs = dict(zip(ordered, schemas, strict=True))
    paths: dict[str, dict] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyledger",
            "version": "1",
            "description": "API keys of an AI API platform, on an immutable PostgreSQL event log. "
            'Every non-2xx answer is {"error": {"message", "type"}}.',
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }


_DOCUMENT = msgspec.json.encode(document())


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_DOCUMENT, content_type="application/json")
