"""The bodies the key management endpoints read, as msgspec structs (unknown fields refused).

/openapi.json describes them (service/http/openapi.py); the rules beyond types (name, expiry window,
limit range) are the domain's, in events/rules.py.
"""

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from events.account import DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS
from events.rules import SPEND_LIMIT_PATTERN

Name = Annotated[
    str,
    msgspec.Meta(
        description="1 to 100 characters after trimming; no control or bidi control characters",
        examples=["Production backend"],
    ),
]
Expiry = Annotated[
    datetime,
    msgspec.Meta(tz=True, description="RFC 3339 with a zone, in the future, at most 1095 days ahead"),
]
SpendLimit = Annotated[
    str,
    msgspec.Meta(
        pattern=SPEND_LIMIT_PATTERN,
        description="CHF as a decimal string, more than 0 and at most 1000000000, up to 9 places",
        examples=["25.00"],
    ),
]


class CreateKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    expires_at: Expiry | None = None
    monthly_spend_limit_chf: SpendLimit | None = None


class UpdateKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    """Any non-empty subset; null clears an expiry or a limit."""

    name: Name | UnsetType = UNSET
    expires_at: Expiry | UnsetType | None = UNSET
    monthly_spend_limit_chf: SpendLimit | UnsetType | None = UNSET

    def __post_init__(self):
        if self.name is UNSET and self.expires_at is UNSET and self.monthly_spend_limit_chf is UNSET:
            raise ValueError("give at least one of name, expires_at, monthly_spend_limit_chf")


class RotateKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    grace_period_seconds: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=MAX_GRACE_SECONDS,
            description="how long the old key keeps verifying; 0 revokes it at once",
        ),
    ] = DEFAULT_GRACE_SECONDS
