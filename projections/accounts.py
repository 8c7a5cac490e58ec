"""The account projections: `api_keys` (one row per key) and `subscriptions` (one per account).

`apply` runs in the same transaction as the append of lifecycle events (read-your-writes); a replay
uses the same function to rebuild the tables from the log.
"""

from collections.abc import Iterable
from datetime import date

import asyncpg

from events import apikey
from events.log import StoredEvent
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


async def apply(connection: asyncpg.Connection, stored_events: Iterable[StoredEvent]) -> None:
    for stored in stored_events:
        event = account_event_decoder.decode(stored.data)
        match event:
            case ApiKeyCreated():
                await connection.execute(
                    """INSERT INTO api_keys (key_id, account_id, name, key_digest, last4, masked_key,
                                             status, created_at, expires_at, monthly_spend_limit_chf,
                                             rotated_from, created_position, updated_position)
                       VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9::numeric, $10, $11, $11)""",
                    event.key_id,
                    stored.account_id,
                    event.name,
                    bytes.fromhex(event.key_digest),
                    event.last4,
                    apikey.masked(event.last4),
                    event.created_at,
                    event.expires_at,
                    event.monthly_spend_limit_chf,
                    event.rotated_from,
                    stored.position,
                )
            case ApiKeyRenamed():
                await _update(connection, stored, event.key_id, "name = $3", event.name)
            case ApiKeyExpirySet():
                await _update(connection, stored, event.key_id, "expires_at = $3", event.expires_at)
            case ApiKeySpendLimitSet():
                await _update(
                    connection,
                    stored,
                    event.key_id,
                    "monthly_spend_limit_chf = $3::numeric",
                    event.monthly_spend_limit_chf,
                )
            case ApiKeyRotated():
                await _update(
                    connection,
                    stored,
                    event.key_id,
                    "rotated_to = $3, expires_at = $4",
                    event.new_key_id,
                    event.expires_at,
                )
            case ApiKeyRevoked():
                await _update(
                    connection,
                    stored,
                    event.key_id,
                    "status = 'revoked', revoked_at = $3, revoked_reason = $4",
                    event.revoked_at,
                    event.reason,
                )
            case SubscriptionActivated() | SubscriptionDeactivated():
                active = isinstance(event, SubscriptionActivated)
                await connection.execute(
                    """INSERT INTO subscriptions (account_id, status, plan, changed_at, updated_position)
                       VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (account_id) DO UPDATE
                       SET status = $2, plan = $3, changed_at = $4, updated_position = $5""",
                    stored.account_id,
                    "active" if active else "inactive",
                    event.plan if active else None,
                    event.activated_at if active else event.deactivated_at,
                    stored.position,
                )


async def _update(
    connection: asyncpg.Connection, stored: StoredEvent, key_id: str, assignments: str, *values
) -> None:
    """Change one key's row as the event says; every change moves updated_position, which the key
    caches follow."""
    await connection.execute(
        f"UPDATE api_keys SET {assignments}, updated_position = $2 WHERE key_id = $1",
        key_id,
        stored.position,
        *values,
    )


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
