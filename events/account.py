"""The account decider: one stream per account holds its keys and its subscription.

`decide(state, command, now)` returns the events a command produces or raises a `DomainError`;
`evolve(state, event)` folds one event into the state. Both are pure.
"""

import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime

from events.errors import InvalidName, KeyIdTaken, KeyLimitReached, KeyNotFound, KeyRevoked
from events.model import (
    AccountEvent,
    ApiKeyCreated,
    ApiKeyRenamed,
    ApiKeyRevoked,
    SubscriptionActivated,
    SubscriptionDeactivated,
)

MAX_ACTIVE_KEYS = 5
MAX_NAME_LENGTH = 100
# An account id: what account systems hand out (acct_…, UUIDs, e-mail addresses, auth0|…), and nothing
# that reads as a path (".", "..", "/"), a control character, or text that looks like something else
# (bidi, zero-width). `(?![\s\S])` is the end of the text in Python and in JSON Schema alike: Python's
# `$` would let a trailing newline through.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@|+-]{0,99}(?![\s\S])"
ACCOUNT_ID_RULE = "1 to 100 letters, digits or _ . : @ | + -, starting with a letter or digit"
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)
# Bidirectional overrides and isolates can make a name read differently from what it is.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Other invisible format characters (zero-width space, word joiner, BOM, soft hyphen: category Cf) can
# make two names look the same; only the joiners that emoji sequences and some scripts need may stay.
_JOINERS = frozenset("\u200c\u200d")


# Commands


@dataclass(frozen=True)
class CreateKey:
    key_id: str
    name: str
    key_digest: str
    last4: str


@dataclass(frozen=True)
class RenameKey:
    key_id: str
    name: str


@dataclass(frozen=True)
class RevokeKey:
    key_id: str


@dataclass(frozen=True)
class SetSubscription:
    active: bool
    plan: str = ""


Command = CreateKey | RenameKey | RevokeKey | SetSubscription


# State


@dataclass(frozen=True)
class Key:
    name: str
    revoked: bool = False


@dataclass(frozen=True)
class Account:
    version: int = 0
    keys: dict[str, Key] = field(default_factory=dict)
    subscription_plan: str | None = None  # None: no active subscription

    @property
    def active_key_count(self) -> int:
        return sum(not key.revoked for key in self.keys.values())


def is_account_id(text: str) -> bool:
    return _ACCOUNT_ID.match(text) is not None


def normalize_name(name: str) -> str:
    """Trim the name and check it, or raise `InvalidName` saying what to change."""
    name = name.strip()
    if not name:
        raise InvalidName('Give the key a name of 1 to 100 characters, e.g. "Production backend".')
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"The key name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}.")
    for char in name:
        category = unicodedata.category(char)
        if (
            char in _BIDI_CONTROLS
            or category in ("Cc", "Cs", "Co")
            or (category == "Cf" and char not in _JOINERS)
        ):
            raise InvalidName(
                f"The key name contains the control or invisible character U+{ord(char):04X}; use printable characters only."
            )
    return name


def decide(state: Account, command: Command, now: datetime) -> list[AccountEvent]:
    match command:
        case CreateKey():
            name = normalize_name(command.name)
            if command.key_id in state.keys:  # ids are random: only a bug or a replayed command gets here
                raise KeyIdTaken("A key with this id exists already; send the request again.")
            if state.active_key_count >= MAX_ACTIVE_KEYS:
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
                )
            ]
        case RenameKey():
            key = _existing_key(state, command.key_id)
            name = normalize_name(command.name)
            if key.revoked:
                raise KeyRevoked("This API key is revoked and can no longer be renamed.")
            if name == key.name:
                return []
            return [ApiKeyRenamed(key_id=command.key_id, name=name, previous_name=key.name, renamed_at=now)]
        case RevokeKey():
            key = _existing_key(state, command.key_id)
            if key.revoked:
                return []
            return [ApiKeyRevoked(key_id=command.key_id, revoked_at=now)]
        case SetSubscription(active=True):
            if state.subscription_plan == command.plan:
                return []
            return [SubscriptionActivated(plan=command.plan, activated_at=now)]
        case SetSubscription(active=False):
            if state.subscription_plan is None:
                return []
            return [SubscriptionDeactivated(deactivated_at=now)]
    raise TypeError(f"unknown command {command!r}")


def _existing_key(state: Account, key_id: str) -> Key:
    key = state.keys.get(key_id)
    if key is None:
        raise KeyNotFound()
    return key


def evolve(state: Account, event: AccountEvent) -> Account:
    match event:
        case ApiKeyCreated():
            keys = {**state.keys, event.key_id: Key(name=event.name)}
            return replace(state, version=state.version + 1, keys=keys)
        case ApiKeyRenamed():
            keys = {**state.keys, event.key_id: replace(state.keys[event.key_id], name=event.name)}
            return replace(state, version=state.version + 1, keys=keys)
        case ApiKeyRevoked():
            keys = {**state.keys, event.key_id: replace(state.keys[event.key_id], revoked=True)}
            return replace(state, version=state.version + 1, keys=keys)
        case SubscriptionActivated():
            return replace(state, version=state.version + 1, subscription_plan=event.plan)
        case SubscriptionDeactivated():
            return replace(state, version=state.version + 1, subscription_plan=None)
    raise TypeError(f"unknown event {event!r}")


def fold(events: list[AccountEvent], state: Account | None = None) -> Account:
    state = state or Account()
    for event in events:
        state = evolve(state, event)
    return state
