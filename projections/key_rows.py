"""The rows of the key projection (`api_keys`), folded in memory from an account's lifecycle events.

Pure: time travel reads the account stream up to a moment and folds it here, so the keys as they
stood then come from the log alone, in the shape the live projection gives today
(tests/integration/test_key_projection.py proves both folds agree).
"""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from events import apikey
from events.model import (
    AccountEvent,
    ApiKeyCreated,
    ApiKeyExpirySet,
    ApiKeyRenamed,
    ApiKeyRevoked,
    ApiKeyRotated,
    ApiKeySpendLimitSet,
)


class KeyRow(TypedDict):
    """The columns of an `api_keys` row that a key object is rendered from."""

    key_id: str
    name: str
    last4: str
    masked_key: str
    status: str  # active or revoked; expired is the clock's verdict on expires_at
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None
    monthly_spend_limit_chf: Decimal | None
    rotated_from: str | None
    rotated_to: str | None
    revoked_reason: str | None


def key_rows(events: Iterable[AccountEvent]) -> list[KeyRow]:
    """The account's keys after these events (in stream order), newest first, revoked included.

    Subscription events leave the keys as they are.
    """
    rows: dict[str, KeyRow] = {}  # in creation order
    for event in events:
        match event:
            case ApiKeyCreated():
                rows[event.key_id] = KeyRow(
                    key_id=event.key_id,
                    name=event.name,
                    last4=event.last4,
                    masked_key=apikey.masked(event.last4),
                    status="active",
                    created_at=event.created_at,
                    revoked_at=None,
                    expires_at=event.expires_at,
                    monthly_spend_limit_chf=_amount(event.monthly_spend_limit_chf),
                    rotated_from=event.rotated_from,
                    rotated_to=None,
                    revoked_reason=None,
                )
            case ApiKeyRenamed():
                rows[event.key_id] = {**rows[event.key_id], "name": event.name}
            case ApiKeyExpirySet():
                rows[event.key_id] = {**rows[event.key_id], "expires_at": event.expires_at}
            case ApiKeySpendLimitSet():
                limit = _amount(event.monthly_spend_limit_chf)
                rows[event.key_id] = {**rows[event.key_id], "monthly_spend_limit_chf": limit}
            case ApiKeyRotated():
                changed = {"rotated_to": event.new_key_id, "expires_at": event.expires_at}
                rows[event.key_id] = {**rows[event.key_id], **changed}
            case ApiKeyRevoked():
                revoked = {
                    "status": "revoked",
                    "revoked_at": event.revoked_at,
                    "revoked_reason": event.reason,
                }
                rows[event.key_id] = {**rows[event.key_id], **revoked}
    return list(reversed(rows.values()))


def _amount(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)
