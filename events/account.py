"""The account decider: one stream per account holds its keys and its subscription.

`decide(state, command, now)` returns the events a command produces or raises a `DomainError`;
`evolve(state, event)` folds one event into the state. Both are pure. Time matters without events:
a key whose `expires_at` has passed is expired at every `now` after it, no one has to act.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from msgspec import UNSET, UnsetType

from events import rules
from events.errors import KeyExpired, KeyIdTaken, KeyLimitReached, KeyNotFound, KeyRevoked, KeyRotated
from events.model import (
    AccountEvent,
    ApiKeyCreated,
    ApiKeyExpirySet,
    ApiKeyRenamed,
    ApiKeyRevoked,
    ApiKeyRotated,
    ApiKeySpendLimitSet,
    SubscriptionActivated,
    SubscriptionDeactivated,
)

MAX_ACTIVE_KEYS = 5
DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 604_800

# Commands


@dataclass(frozen=True)
class CreateKey:
    key_id: str
    name: str
    key_digest: str
    last4: str
    expires_at: datetime | None = None
    monthly_spend_limit_chf: str | None = None


@dataclass(frozen=True)
class UpdateKey:
    """Change any of a key's name, expiry and limit; UNSET leaves it, None clears expiry or limit."""

    key_id: str
    name: str | UnsetType = UNSET
    expires_at: datetime | UnsetType | None = UNSET
    monthly_spend_limit_chf: str | UnsetType | None = UNSET


@dataclass(frozen=True)
class RotateKey:
    key_id: str
    new_key_id: str
    key_digest: str  # of the new key
    last4: str
    grace_period_seconds: int = DEFAULT_GRACE_SECONDS


@dataclass(frozen=True)
class RevokeKey:
    key_id: str
    reason: str = "user"  # "user" or "leaked"; "rotated" comes from RotateKey
    url: str | None = None


@dataclass(frozen=True)
class SetSubscription:
    active: bool
    plan: str = ""


Command = CreateKey | UpdateKey | RotateKey | RevokeKey | SetSubscription


# State


@dataclass(frozen=True)
class Key:
    name: str
    revoked: bool = False
    expires_at: datetime | None = None
    spend_limit: str | None = None
    rotated_to: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def verifies(self, now: datetime) -> bool:
        """Neither revoked nor expired: a rotated key verifies through its grace period."""
        return not self.revoked and not self.expired(now)

    def counts_toward_limit(self, now: datetime) -> bool:
        return self.verifies(now) and self.rotated_to is None


@dataclass(frozen=True)
class Account:
    version: int = 0
    keys: dict[str, Key] = field(default_factory=dict)
    subscription_plan: str | None = None  # None: no active subscription

    def active_key_count(self, now: datetime) -> int:
        return sum(key.counts_toward_limit(now) for key in self.keys.values())


def decide(state: Account, command: Command, now: datetime) -> list[AccountEvent]:
    match command:
        case CreateKey():
            return _create(state, command, now)
        case UpdateKey():
            return _update(_existing_key(state, command.key_id), command, now)
        case RotateKey():
            return _rotate(state, command, now)
        case RevokeKey():
            key = _existing_key(state, command.key_id)
            if not key.verifies(now):  # revoked already, or expired: nothing left to stop
                return []
            return [
                ApiKeyRevoked(key_id=command.key_id, revoked_at=now, reason=command.reason, url=command.url)
            ]
        case SetSubscription(active=True):
            if state.subscription_plan == command.plan:
                return []
            return [SubscriptionActivated(plan=command.plan, activated_at=now)]
        case SetSubscription(active=False):
            if state.subscription_plan is None:
                return []
            return [SubscriptionDeactivated(deactivated_at=now)]
    raise TypeError(f"unknown command {command!r}")


def _create(state: Account, command: CreateKey, now: datetime) -> list[AccountEvent]:
    name = rules.normalize_name(command.name)
    expires_at = rules.check_expiry(command.expires_at, now)
    limit = rules.spend_limit(command.monthly_spend_limit_chf)
    if command.key_id in state.keys:  # ids are random: only a bug or a replayed command gets here
        raise KeyIdTaken("A key with this id exists already; send the request again.")
    if state.active_key_count(now) >= MAX_ACTIVE_KEYS:
        raise KeyLimitReached(
            f"This account already has {MAX_ACTIVE_KEYS} active API keys, the maximum. "
            "Revoke unused keys first, then create the new one."
        )
    return [
        ApiKeyCreated(
            key_id=command.key_id,
            name=name,
            key_digest=command.key_digest,
            last4=command.last4,
            created_at=now,
            expires_at=expires_at,
            monthly_spend_limit_chf=limit,
        )
    ]


def _update(key: Key, command: UpdateKey, now: datetime) -> list[AccountEvent]:
    # Every field is checked before any event is made: one bad field changes nothing.
    name = command.name if command.name is UNSET else rules.normalize_name(command.name)
    expires_at = command.expires_at
    if expires_at is not UNSET:
        expires_at = rules.check_expiry(expires_at, now)
    limit = command.monthly_spend_limit_chf
    if limit is not UNSET:
        limit = rules.spend_limit(limit)
    _refuse_unless_it_verifies(key, now, "changed")
    if expires_at is not UNSET and key.rotated_to is not None:
        raise KeyRotated(
            f"This API key was rotated: it is replaced by {key.rotated_to}, and its rotation set its "
            "expiry. Change the new key instead."
        )
    key_id, events = command.key_id, []
    if name is not UNSET and name != key.name:
        events.append(ApiKeyRenamed(key_id=key_id, name=name, previous_name=key.name, renamed_at=now))
    if expires_at is not UNSET and expires_at != key.expires_at:
        events.append(
            ApiKeyExpirySet(
                key_id=key_id, expires_at=expires_at, previous_expires_at=key.expires_at, set_at=now
            )
        )
    if limit is not UNSET and limit != key.spend_limit:
        events.append(
            ApiKeySpendLimitSet(
                key_id=key_id,
                monthly_spend_limit_chf=limit,
                previous_monthly_spend_limit_chf=key.spend_limit,
                set_at=now,
            )
        )
    return events


def _rotate(state: Account, command: RotateKey, now: datetime) -> list[AccountEvent]:
    key = _existing_key(state, command.key_id)
    if key.rotated_to is not None:  # first: of two rotations at one moment, the second learns this
        raise KeyRotated(f"This API key was rotated already: it is replaced by {key.rotated_to}.")
    _refuse_unless_it_verifies(key, now, "rotated")
    if command.new_key_id in state.keys:
        raise KeyIdTaken("A key with this id exists already; send the request again.")
    grace_ends = now + timedelta(seconds=command.grace_period_seconds)
    expires_at = min(grace_ends, key.expires_at) if key.expires_at is not None else grace_ends
    events: list[AccountEvent] = [
        ApiKeyCreated(
            key_id=command.new_key_id,
            name=key.name,
            key_digest=command.key_digest,
            last4=command.last4,
            created_at=now,
            monthly_spend_limit_chf=key.spend_limit,
            rotated_from=command.key_id,
        ),
        ApiKeyRotated(
            key_id=command.key_id,
            new_key_id=command.new_key_id,
            grace_period_seconds=command.grace_period_seconds,
            expires_at=expires_at,
            rotated_at=now,
        ),
    ]
    if command.grace_period_seconds == 0:
        events.append(ApiKeyRevoked(key_id=command.key_id, revoked_at=now, reason="rotated"))
    return events


def _existing_key(state: Account, key_id: str) -> Key:
    key = state.keys.get(key_id)
    if key is None:
        raise KeyNotFound()
    return key


def _refuse_unless_it_verifies(key: Key, now: datetime, what: str) -> None:
    if key.revoked:
        raise KeyRevoked(f"This API key is revoked and can no longer be {what}.")
    if key.expired(now):
        raise KeyExpired(f"This API key has expired and can no longer be {what}; create a new one.")


def evolve(state: Account, event: AccountEvent) -> Account:
    match event:
        case SubscriptionActivated():
            return replace(state, version=state.version + 1, subscription_plan=event.plan)
        case SubscriptionDeactivated():
            return replace(state, version=state.version + 1, subscription_plan=None)
        case ApiKeyCreated():
            key = Key(name=event.name, expires_at=event.expires_at, spend_limit=event.monthly_spend_limit_chf)
        case ApiKeyRenamed():
            key = replace(state.keys[event.key_id], name=event.name)
        case ApiKeyExpirySet():
            key = replace(state.keys[event.key_id], expires_at=event.expires_at)
        case ApiKeySpendLimitSet():
            key = replace(state.keys[event.key_id], spend_limit=event.monthly_spend_limit_chf)
        case ApiKeyRotated():
            key = replace(state.keys[event.key_id], rotated_to=event.new_key_id, expires_at=event.expires_at)
        case ApiKeyRevoked():
            key = replace(state.keys[event.key_id], revoked=True)
        case _:
            raise TypeError(f"unknown event {event!r}")
    return replace(state, version=state.version + 1, keys={**state.keys, event.key_id: key})


def fold(events: list[AccountEvent], state: Account | None = None) -> Account:
    state = state or Account()
    for event in events:
        state = evolve(state, event)
    return state
