"""The rows of the key projection (`api_keys`), folded in memory from an account's lifecycle events.

Pure: time travel reads the account stream up to a moment and folds it here, so the keys as they
stood then come from the log alone, in the shape the live projection gives today.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import TypedDict

from events import apikey
from events.model import AccountEvent, ApiKeyCreated, ApiKeyRenamed, ApiKeyRevoked


class KeyRow(TypedDict):
    """The columns of an `api_keys` row that a key object is rendered from."""

    key_id: str
    name: str
    last4: str
    masked_key: str
    status: str
    created_at: datetime
    revoked_at: datetime | None


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
                )
            case ApiKeyRenamed():
                rows[event.key_id] = {**rows[event.key_id], "name": event.name}
            case ApiKeyRevoked():
                rows[event.key_id] = {
                    **rows[event.key_id],
                    "status": "revoked",
                    "revoked_at": event.revoked_at,
                }
    return list(reversed(rows.values()))
