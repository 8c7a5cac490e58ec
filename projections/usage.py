"""Usage projections: per-key totals and per-key UTC daily buckets, built set-based from the log.

`project_batch` moves the checkpoint and the projection rows forward in the caller's transaction:
if it does not commit, neither does anything else, so a crash can neither skip nor double-count.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg

PROJECTOR = "usage"
LAST_POSITION = 2**63 - 1
WINDOW_DAYS = 30
# The one definition of a usage event's bucket: the UTC day of the request (not of its recording).
_UTC_DAY = "(occurred_at AT TIME ZONE 'UTC')::date"
# The fields of a UsageRecorded event: its columns (migration 008), or its JSON where it kept it.
_USAGE_FIELDS = """
    position,
    account_id,
    coalesce(key_id, data->>'key_id')                          AS key_id,
    coalesce(occurred_at, (data->>'occurred_at')::timestamptz) AS occurred_at,
    coalesce(cost_chf, (data->>'cost_chf')::numeric)           AS cost_chf"""

# Per key and UTC day, from the log alone (time travel): what the projections held at that moment.
# Typed rows through events_usage_account, the rest (usage kept as JSON) through events_account_position.
_USAGE_RECORDED_UP_TO = f"""
    WITH usage AS (
        SELECT {_USAGE_FIELDS} FROM events
        WHERE account_id = $1 AND key_id IS NOT NULL AND recorded_at <= $2
        UNION ALL
        SELECT {_USAGE_FIELDS} FROM events
        WHERE account_id = $1 AND key_id IS NULL AND type = 'UsageRecorded' AND recorded_at <= $2)
    SELECT key_id, {_UTC_DAY} AS day, count(*) AS requests, sum(cost_chf) AS cost_chf,
           max(occurred_at) AS last_used_at
    FROM usage GROUP BY 1, 2"""

# One statement, one pass over the batch: its usage grouped per key and UTC day once, which the three
# upserts and the checkpoint read. All parts see one snapshot, and run in the caller's transaction.
_PROJECT = f"""
    WITH batch AS MATERIALIZED (
        SELECT position, type, key_id, account_id, occurred_at, cost_chf, data FROM events
        WHERE position > $1 AND position <= $3 ORDER BY position LIMIT $2),
    usage AS (
        SELECT {_USAGE_FIELDS} FROM batch WHERE key_id IS NOT NULL OR type = 'UsageRecorded'),
    grouped AS MATERIALIZED (
        SELECT key_id, {_UTC_DAY} AS day, min(account_id) AS account_id, count(*) AS requests,
               sum(cost_chf) AS cost_chf, max(occurred_at) AS last_used_at, max(position) AS last_position
        FROM usage GROUP BY 1, 2),
    totals AS (
        INSERT INTO key_usage_totals AS total (key_id, account_id, requests, cost_chf, last_used_at)
        SELECT key_id, min(account_id), sum(requests), sum(cost_chf), max(last_used_at) FROM grouped GROUP BY key_id
        ON CONFLICT (key_id) DO UPDATE SET
            requests     = total.requests + excluded.requests,
            cost_chf     = total.cost_chf + excluded.cost_chf,
            last_used_at = greatest(total.last_used_at, excluded.last_used_at)),
    days AS (
        INSERT INTO key_usage_daily AS daily (key_id, day, account_id, requests, cost_chf)
        SELECT key_id, day, account_id, requests, cost_chf FROM grouped
        ON CONFLICT (key_id, day) DO UPDATE SET
            requests = daily.requests + excluded.requests,
            cost_chf = daily.cost_chf + excluded.cost_chf),
    months AS (
        INSERT INTO key_usage_monthly AS monthly (key_id, month, account_id, requests, cost_chf, last_position)
        SELECT key_id, date_trunc('month', day)::date, min(account_id), sum(requests), sum(cost_chf),
               max(last_position)
        FROM grouped GROUP BY 1, 2
        ON CONFLICT (key_id, month) DO UPDATE SET
            requests      = monthly.requests + excluded.requests,
            cost_chf      = monthly.cost_chf + excluded.cost_chf,
            last_position = greatest(monthly.last_position, excluded.last_position)),
    moved AS (
        UPDATE projector_checkpoints SET position = (SELECT max(position) FROM batch)
        WHERE projector = $4 AND EXISTS (SELECT FROM batch))
    SELECT count(*) FROM batch"""


async def project_batch(connection: asyncpg.Connection, limit: int = 50_000, up_to: int | None = None) -> int:
    """Fold up to `limit` events after the checkpoint (and none after position `up_to`, when given) into
    the projections; returns how many were read.

    Must run inside a transaction (the checkpoint row is locked until it commits).
    """
    if not connection.is_in_transaction():
        raise RuntimeError("project_batch must run inside a transaction")
    await connection.execute(
        "INSERT INTO projector_checkpoints (projector, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        PROJECTOR,
    )
    start = await connection.fetchval(
        "SELECT position FROM projector_checkpoints WHERE projector = $1 FOR UPDATE", PROJECTOR
    )
    return await connection.fetchval(
        _PROJECT, start, limit, LAST_POSITION if up_to is None else up_to, PROJECTOR
    )


async def checkpoint(connection: asyncpg.Connection) -> int:
    return await connection.fetchval(
        "SELECT coalesce((SELECT position FROM projector_checkpoints WHERE projector = $1), 0)", PROJECTOR
    )


@dataclass
class KeyUsage:
    requests: int = 0
    cost_chf: Decimal = Decimal(0)
    last_used_at: datetime | None = None
    daily: dict[date, tuple[int, Decimal]] = field(default_factory=dict)


def window(today: date | None = None) -> list[date]:
    """The last 30 UTC days, oldest first, today last."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(WINDOW_DAYS - 1, -1, -1)]


async def usage_recorded_up_to(
    connection: asyncpg.Connection, account_id: str, moment: datetime
) -> dict[str, KeyUsage]:
    """Each key's totals and daily buckets from the usage recorded at or before `moment`."""
    usage: dict[str, KeyUsage] = {}
    for group in await connection.fetch(_USAGE_RECORDED_UP_TO, account_id, moment):
        key = usage.setdefault(group["key_id"], KeyUsage())
        key.requests += group["requests"]
        key.cost_chf += group["cost_chf"]
        if key.last_used_at is None or group["last_used_at"] > key.last_used_at:
            key.last_used_at = group["last_used_at"]
        key.daily[group["day"]] = (group["requests"], group["cost_chf"])
    return usage


async def lag(connection: asyncpg.Connection, query_timeout: float | None = None) -> int:
    """Events in the log that the usage projections have not folded in yet."""
    return await connection.fetchval(
        """SELECT (SELECT coalesce(max(position), 0) FROM events)
                - coalesce((SELECT position FROM projector_checkpoints WHERE projector = $1), 0)""",
        PROJECTOR,
        timeout=query_timeout,
    )


async def account_days(
    connection: asyncpg.Connection, account_id: str, first: date, last: date
) -> list[asyncpg.Record]:
    """(key_id, name, day, requests, cost_chf) of each key and UTC day with usage, read through the
    analysts' views (docs/analytics.md), keys in creation order."""
    return await connection.fetch(
        """SELECT usage.key_id, keys.name, usage.day, usage.requests, usage.cost_chf
           FROM analytics.key_usage_daily AS usage
           LEFT JOIN analytics.keys AS keys ON keys.key_id = usage.key_id
           WHERE usage.account_id = $1 AND usage.day BETWEEN $2 AND $3
           ORDER BY keys.created_at, usage.key_id, usage.day""",
        account_id,
        first,
        last,
    )


async def month_spend_changes(
    connection: asyncpg.Connection, month: date, after: int
) -> list[asyncpg.Record]:
    """(key_id, cost_chf, last_position) of the keys with a spend limit whose cost in `month` moved
    past `after` (last_position order)."""
    return await connection.fetch(
        """SELECT m.key_id, m.cost_chf, m.last_position
           FROM key_usage_monthly m JOIN api_keys k USING (key_id)
           WHERE m.month = $1 AND m.last_position > $2 AND k.monthly_spend_limit_chf IS NOT NULL
           ORDER BY m.last_position""",
        month,
        after,
    )


async def month_spend_of(
    connection: asyncpg.Connection, month: date, key_ids: list[str]
) -> dict[str, Decimal]:
    """Each key's cost in `month`, for the keys of this list that have any."""
    return dict(
        await connection.fetch(
            "SELECT key_id, cost_chf FROM key_usage_monthly WHERE month = $1 AND key_id = ANY($2)",
            month,
            key_ids,
        )
    )
