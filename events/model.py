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


class ApiKeyRenamed(Event, frozen=True, kw_only=True, tag=True):
    key_id: str
    name: str
    previous_name: str
    renamed_at: datetime


class ApiKeyRevoked(Event, frozen=True, kw_only=True, tag=True):
    key_id: str
    revoked_at: datetime


class SubscriptionActivated(Event, frozen=True, kw_only=True, tag=True):
    plan: str
    activated_at: datetime


class SubscriptionDeactivated(Event, frozen=True, kw_only=True, tag=True):
    deactivated_at: datetime


AccountEvent = ApiKeyCreated | ApiKeyRenamed | ApiKeyRevoked | SubscriptionActivated | SubscriptionDeactivated

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
