"""The bodies keyledger answers with, as msgspec structs.

Handlers encode these, and /openapi.json describes them (service/openapi.py), so the document and the
answers come from one definition.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

Chf = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]+\.[0-9]{9}$", description="CHF, exact, 9 decimal places", examples=["4.210000000"]
    ),
]
Day = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="a UTC day")]
ErrorType = Literal[
    "invalid_request",
    "authentication_required",
    "invalid_token",
    "subscription_required",
    "spend_limit_reached",
    "forbidden",
    "key_expired",
    "not_found",
    "method_not_allowed",
    "key_limit_reached",
    "key_revoked",
    "key_rotated",
    "conflict",
    "payload_too_large",
    "unprocessable",
    "internal_error",
    "service_unavailable",
]


class ErrorDetail(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(description="what went wrong and what to do about it")]
    type: ErrorType


class ErrorEnvelope(msgspec.Struct):
    """Every non-2xx answer, without exception."""

    error: ErrorDetail


class DailyUsage(msgspec.Struct):
    date: Day
    requests: int
    cost_chf: Chf


class RecentUsage(msgspec.Struct):
    requests: int
    cost_chf: Chf
    daily: Annotated[list[DailyUsage], msgspec.Meta(description="30 UTC days, oldest first, today last")]


class MonthUsage(msgspec.Struct):
    requests: int
    cost_chf: Chf


class UsageSummary(msgspec.Struct):
    total_requests: int
    total_cost_chf: Chf
    last_30_days: RecentUsage
    this_month: Annotated[MonthUsage, msgspec.Meta(description="the current UTC calendar month to date")]


class KeyObject(msgspec.Struct):
    id: str
    name: str
    masked_key: Annotated[str, msgspec.Meta(examples=["sk-***...9fQz"])]
    status: Annotated[
        Literal["active", "revoked", "expired"],
        msgspec.Meta(
            description="expired from expires_at on, without any request; revoked wins over expired"
        ),
    ]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None
    monthly_spend_limit_chf: Annotated[
        Chf | None, msgspec.Meta(description="verification answers 402 once this month's cost reaches it")
    ]
    rotated_from: Annotated[str | None, msgspec.Meta(description="the key this one replaced")]
    rotated_to: Annotated[str | None, msgspec.Meta(description="the key that replaced this one")]
    revoked_reason: Literal["user", "rotated", "leaked"] | None
    usage: UsageSummary


class CreatedKey(KeyObject):
    key: Annotated[str, msgspec.Meta(description="the full sk- key: returned this once, never again")]


class KeyList(msgspec.Struct):
    data: Annotated[list[KeyObject], msgspec.Meta(description="newest first, revoked keys included")]


class KeyEvent(msgspec.Struct):
    position: int
    version: int
    type: Literal[
        "ApiKeyCreated",
        "ApiKeyRenamed",
        "ApiKeyRevoked",
        "ApiKeyExpirySet",
        "ApiKeySpendLimitSet",
        "ApiKeyRotated",
    ]
    recorded_at: datetime
    actor: str | None
    request_id: str | None
    data: dict[str, Any]
    # With ?proof=true only: the event's leaf in the Merkle tree, its chain hash (hex), its audit path.
    leaf_index: int | msgspec.UnsetType = msgspec.UNSET
    hash: str | msgspec.UnsetType = msgspec.UNSET
    inclusion_proof: Any = msgspec.UNSET  # {"tree_size": N, "hashes": [base64, …]}


class KeyHistory(msgspec.Struct):
    data: Annotated[list[KeyEvent], msgspec.Meta(description="lifecycle events of the key, oldest first")]
    checkpoint: Annotated[
        str | msgspec.UnsetType,
        msgspec.Meta(description="with ?proof=true: the signed checkpoint every inclusion_proof is against"),
    ] = msgspec.UNSET


class Verified(msgspec.Struct):
    valid: bool
    key_id: str
    account_id: str


class UsageAccepted(msgspec.Struct):
    accepted: Annotated[int, msgspec.Meta(description="events stored by this call")]
    duplicates: Annotated[int, msgspec.Meta(description="events whose request_id was already stored")]


class SubscriptionState(msgspec.Struct):
    account_id: str
    status: Literal["active", "inactive"]
    plan: Annotated[str | None, msgspec.Meta(description="null while the subscription is inactive")]


class AuditEvent(msgspec.Struct):
    position: int
    stream_id: str | None
    version: int | None
    account_id: str
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: str
    idempotency_key: str | None
    prev_hash: Annotated[str, msgspec.Meta(description="hex SHA-256 of the event before (or the genesis)")]
    hash: Annotated[str | None, msgspec.Meta(description="hex SHA-256 chaining this event to prev_hash")]
    leaf_index: Annotated[
        Annotated[int, msgspec.Meta(ge=0)] | None,
        msgspec.Meta(
            description="the event's 0-based leaf in the log's Merkle tree (not covered by the hash); "
            "null until the tree writer reaches it",
        ),
    ]


class AuditPage(msgspec.Struct):
    data: list[AuditEvent]
    next_after: Annotated[int, msgspec.Meta(description="pass as `after` to read the next page")]


class Health(msgspec.Struct):
    status: Literal["ok", "ready"]


encode = msgspec.json.Encoder().encode


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """The one way an answer is made: a struct (or plain data) encoded as JSON (the verification of
    a valid key, the hot path, copies its headers made in advance instead: routes/verify.py)."""
    return web.Response(status=status, body=encode(payload), content_type="application/json", headers=headers)
