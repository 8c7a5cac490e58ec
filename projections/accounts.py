"""The account projections: `api_keys` (one row per key) and `subscriptions` (one per account).

`apply` runs in the same transaction as the append of lifecycle events (read-your-writes); a replay
uses the same function to rebuild the tables from the log.
"""

from collections.abc import Iterable
from datetime import date

import asyncpg

from events import apikey
from events.account import Account, Key
from events.log import StoredEvent, account_stream
from events.model import (
    ApiKeyCreated,
    ApiKeyExpirySet,
    ApiKeyRenamed,
    ApiKeyRevoked,
    ApiKeyRotated,
    ApiKeySpendLimitSet,
    SubscriptionActivated,
    SubscriptionDeactivated,
    account_event_decoder,
)

KEY_COLUMNS = """key_id, account_id, name, last4, masked_key, status, created_at, revoked_at, expires_at,
                 monthly_spend_limit_chf, rotated_from, rotated_to, revoked_reason"""


# The columns of a new row, and those an event may change on an existing one (each change also moves
# updated_position, which the key caches follow). Types are those of the unnest arrays below.
_NEW_KEY = {
    "key_id": "text", "account_id": "text", "name": "text", "key_digest": "bytea", "last4": "text",
    "masked_key": "text", "status": "text", "created_at": "timestamptz", "revoked_at": "timestamptz",
    "expires_at": "timestamptz", "monthly_spend_limit_chf": "numeric", "rotated_from": "text",
    "rotated_to": "text", "revoked_reason": "text", "created_position": "bigint", "updated_position": "bigint",
}  # fmt: skip
_CHANGEABLE = ("name", "expires_at", "monthly_spend_limit_chf", "rotated_to", "status", "revoked_at",
               "revoked_reason")  # fmt: skip
_SUBSCRIPTION = {"account_id": "text", "status": "text", "plan": "text", "changed_at": "timestamptz",
                 "updated_position": "bigint"}  # fmt: skip


def _unnest(columns: dict[str, str], first: int) -> str:
    arrays = ", ".join(f"${first + n}::{kind}[]" for n, kind in enumerate(columns.values()))
    return f"unnest({arrays}) AS c({', '.join(columns)})"


_CHANGED_KEY = {"key_id": "text", "updated_position": "bigint", "assigned": "int"} | {
    column: _NEW_KEY[column] for column in _CHANGEABLE
}
_ASSIGNMENTS = ", ".join(
    f"{column} = CASE WHEN c.assigned & {1 << bit} <> 0 THEN c.{column} ELSE k.{column} END"
    for bit, column in enumerate(_CHANGEABLE)
)
_FIRST_CHANGED, _FIRST_SUBSCRIPTION = 1 + len(_NEW_KEY), 1 + len(_NEW_KEY) + len(_CHANGED_KEY)
# One statement for any number of events: their changes merged per key (and per account) first.
_APPLY = f"""
    WITH new_keys AS (
        INSERT INTO api_keys ({", ".join(_NEW_KEY)}) SELECT * FROM {_unnest(_NEW_KEY, 1)}
    ), changed_keys AS (
        UPDATE api_keys k SET {_ASSIGNMENTS}, updated_position = c.updated_position
        FROM {_unnest(_CHANGED_KEY, _FIRST_CHANGED)} WHERE k.key_id = c.key_id
    )
    INSERT INTO subscriptions ({", ".join(_SUBSCRIPTION)}) SELECT * FROM {_unnest(_SUBSCRIPTION, _FIRST_SUBSCRIPTION)}
    ON CONFLICT (account_id) DO UPDATE
    SET status = excluded.status, plan = excluded.plan, changed_at = excluded.changed_at,
        updated_position = excluded.updated_position"""


def _changes(event) -> dict:
    """The columns an event on an existing key sets."""
    match event:
        case ApiKeyRenamed():
            return {"name": event.name}
        case ApiKeyExpirySet():
            return {"expires_at": event.expires_at}
        case ApiKeySpendLimitSet():
            return {"monthly_spend_limit_chf": event.monthly_spend_limit_chf}
        case ApiKeyRotated():
            return {"rotated_to": event.new_key_id, "expires_at": event.expires_at}
        case ApiKeyRevoked():
            return {"status": "revoked", "revoked_at": event.revoked_at, "revoked_reason": event.reason}
    raise TypeError(f"not a change of a key: {event!r}")


async def apply(connection: asyncpg.Connection, stored_events: Iterable[StoredEvent]) -> None:
    """Project lifecycle events (in position order) with one statement, whatever their number."""
    new_keys: dict[str, dict] = {}
    changed: dict[str, dict] = {}  # key id -> the columns set, and updated_position
    subscriptions: dict[str, dict] = {}
    for stored in stored_events:
        event = account_event_decoder.decode(stored.data)
        match event:
            case ApiKeyCreated():
                new_keys[event.key_id] = {
                    "key_id": event.key_id,
                    "account_id": stored.account_id,
                    "name": event.name,
                    "key_digest": bytes.fromhex(event.key_digest),
                    "last4": event.last4,
                    "masked_key": apikey.masked(event.last4),
                    "status": "active",
                    "created_at": event.created_at,
                    "revoked_at": None,
                    "expires_at": event.expires_at,
                    "monthly_spend_limit_chf": event.monthly_spend_limit_chf,
                    "rotated_from": event.rotated_from,
                    "rotated_to": None,
                    "revoked_reason": None,
                    "created_position": stored.position,
                    "updated_position": stored.position,
                }
            case SubscriptionActivated() | SubscriptionDeactivated():
                active = isinstance(event, SubscriptionActivated)
                subscriptions[stored.account_id] = {
                    "account_id": stored.account_id,
                    "status": "active" if active else "inactive",
                    "plan": event.plan if active else None,
                    "changed_at": event.activated_at if active else event.deactivated_at,
                    "updated_position": stored.position,
                }
            case _:
                row = new_keys.get(event.key_id) or changed.setdefault(event.key_id, {})
                row.update(_changes(event), updated_position=stored.position)
    for key_id, row in changed.items():
        row["key_id"] = key_id
        row["assigned"] = sum(1 << bit for bit, column in enumerate(_CHANGEABLE) if column in row)
    arguments = [
        *([row[column] for row in new_keys.values()] for column in _NEW_KEY),
        *([row.get(column) for row in changed.values()] for column in _CHANGED_KEY),
        *([row[column] for row in subscriptions.values()] for column in _SUBSCRIPTION),
    ]
    if new_keys or changed or subscriptions:
        await connection.execute(_APPLY, *arguments)


# The stream's version and the account's keys and subscription in one snapshot: the projection is
# written in the append's transaction, so it stands exactly at that version.
_STATE = """
    SELECT v.version, s.plan, k.key_id, k.name, k.status = 'revoked' AS revoked, k.expires_at,
           k.monthly_spend_limit_chf::text AS spend_limit, k.rotated_to
    FROM (SELECT coalesce(max(version), 0) AS version FROM events WHERE stream_id = $2) AS v
    LEFT JOIN (SELECT coalesce(plan, '') AS plan FROM subscriptions WHERE account_id = $1 AND status = 'active')
        AS s ON true
    LEFT JOIN api_keys k ON k.account_id = $1 AND (k.status = 'active' OR k.key_id = ANY($3::text[]))"""


async def account_state(connection: asyncpg.Connection, account_id: str, key_ids: list[str]) -> Account:
    """The account as the decider sees it, from the projection: its subscription, every key that is
    not revoked (those count toward the key limit or may still be changed) and, whatever their status,
    the keys named in `key_ids` (those a command acts on). The same as folding the stream, without
    reading it; a revoked key no command names changes no decision."""
    rows = await connection.fetch(_STATE, account_id, account_stream(account_id), key_ids)
    keys = {
        row["key_id"]: Key(
            row["name"], row["revoked"], row["expires_at"], row["spend_limit"], row["rotated_to"]
        )
        for row in rows
        if row["key_id"] is not None
    }
    return Account(version=rows[0]["version"], keys=keys, subscription_plan=rows[0]["plan"])


async def list_keys(connection: asyncpg.Connection, account_id: str) -> list[asyncpg.Record]:
    return await connection.fetch(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_position DESC",
        account_id,
    )


async def get_key(connection: asyncpg.Connection, account_id: str, key_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1 AND account_id = $2", key_id, account_id
    )


async def key_changes(connection: asyncpg.Connection, after: int, limit: int) -> list[asyncpg.Record]:
    """Keys changed after a position, in position order (keyset: one event changes one key)."""
    return await connection.fetch(
        """SELECT key_digest, key_id, account_id, status = 'active' AS active, expires_at,
                  monthly_spend_limit_chf, updated_position
           FROM api_keys WHERE updated_position > $1 ORDER BY updated_position LIMIT $2""",
        after,
        limit,
    )


async def subscription_changes(connection: asyncpg.Connection, after: int) -> list[asyncpg.Record]:
    return await connection.fetch(
        """SELECT account_id, status = 'active' AS active, updated_position
           FROM subscriptions WHERE updated_position > $1 ORDER BY updated_position""",
        after,
    )


async def active_key(connection: asyncpg.Connection, digest: bytes, month: date) -> asyncpg.Record | None:
    """The active (not revoked) key with this SHA-256 digest, its expiry and limit, whether its account
    is subscribed, and its cost in the month starting on `month`; or None."""
    return await connection.fetchrow(
        """SELECT k.key_id, k.account_id, k.expires_at, k.monthly_spend_limit_chf,
                  coalesce(s.status = 'active', false) AS subscribed, coalesce(m.cost_chf, 0) AS month_cost_chf
           FROM api_keys k
           LEFT JOIN subscriptions s USING (account_id)
           LEFT JOIN key_usage_monthly m ON m.key_id = k.key_id AND m.month = $2
           WHERE k.key_digest = $1 AND k.status = 'active'""",
        digest,
        month,
    )


async def accounts_of_keys(connection: asyncpg.Connection, key_ids: list[str]) -> dict[str, str]:
    """key id -> account id, for the keys of this list that exist."""
    return dict(
        await connection.fetch("SELECT key_id, account_id FROM api_keys WHERE key_id = ANY($1)", key_ids)
    )


async def keys_by_digest(connection: asyncpg.Connection, digests: list[bytes]) -> dict[bytes, asyncpg.Record]:
    """digest -> (key_id, account_id) of every key of the log with one of these digests, whatever
    its status."""
    rows = await connection.fetch(
        "SELECT key_digest, key_id, account_id FROM api_keys WHERE key_digest = ANY($1)", digests
    )
    return {row["key_digest"]: row for row in rows}
