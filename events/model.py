"""The events of the log. Each type is immutable and tagged with its name in `type`."""

from datetime import datetime

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """Base of every event; the tag (the class name) is stored in the event's `type`."""


class ApiKeyCreated(Event, frozen=True, kw_only=True, tag=True):
    key_id: str
    name: str
    key_digest: str  # hex SHA-256 of the full key; the key itself is never stored
    last4: str
    created_at: datetime
    expires_at: datetime | None = None
    monthly_spend_limit_chf: str | None = None  # exact, 9 places
    rotated_from: str | None = None  # the key this one replaces


class ApiKeyRenamed(Event, frozen=True, kw_only=True, tag=True):
    key_id: str
    name: str
    previous_name: str
    renamed_at: datetime


class ApiKeyRevoked(Event, frozen=True, kw_only=True, tag=True):
    key_id: str
    revoked_at: datetime
    reason: str = "user"  # "user" (the revoke endpoint), "rotated" (no grace period), "leaked"
    url: str | None = None  # where a leaked key was found, as the report said


class ApiKeyExpirySet(Event, frozen=True, kw_only=True, tag=True):
    key_id: str
    expires_at: datetime | None  # None: the key no longer expires
    previous_expires_at: datetime | None
    set_at: datetime


class ApiKeySpendLimitSet(Event, frozen=True, kw_only=True, tag=True):
    key_id: str
    monthly_spend_limit_chf: str | None  # None: no limit
    previous_monthly_spend_limit_chf: str | None
    set_at: datetime


class ApiKeyRotated(Event, frozen=True, kw_only=True, tag=True):
    """The key was replaced by `new_key_id` (created by the event before this one); it expires at
    `expires_at`, the end of its grace period (or its own earlier expiry)."""

    key_id: str
    new_key_id: str
    grace_period_seconds: int
    expires_at: datetime
    rotated_at: datetime


class SubscriptionActivated(Event, frozen=True, kw_only=True, tag=True):
    plan: str
    activated_at: datetime


class SubscriptionDeactivated(Event, frozen=True, kw_only=True, tag=True):
    deactivated_at: datetime


KeyEvent = (
    ApiKeyCreated | ApiKeyRenamed | ApiKeyRevoked | ApiKeyExpirySet | ApiKeySpendLimitSet | ApiKeyRotated
)
AccountEvent = KeyEvent | SubscriptionActivated | SubscriptionDeactivated

# Stored events are read leniently (no forbid_unknown_fields) so that old readers survive new fields.
account_event_decoder = msgspec.json.Decoder(AccountEvent)
event_encoder = msgspec.json.Encoder()


def event_type(event: Event) -> str:
    return type(event).__name__


def public_fields(event: Event) -> dict:
    """The fields of an event that may be shown to the key's owner: everything but the digest."""
    fields = msgspec.to_builtins(event)
    fields.pop("type", None)
    fields.pop("key_digest", None)
    return fields


class UsageRecorded(Event, frozen=True, kw_only=True, tag=True):
    """One request made with a key, as the gateway reported it."""

    request_id: str
    key_id: str
    occurred_at: datetime
    cost_chf: str  # exact decimal with 9 places, e.g. "0.000150000"; never a float
    units: int
    endpoint: str
    model: str
