"""The key view: a key's `api_keys` row with its usage totals and daily buckets, in one statement.

One statement is one snapshot, so the key, its totals and its buckets always agree, whatever the
projector commits meanwhile, without a transaction around several reads. Amounts come out as the
API's CHF text (`numeric(38, 9)` prints exactly 9 places, as `events.usage.chf_text` does): the
projection columns have that scale, so the cast never rounds, and no Decimal is made per bucket.
"""

from dataclasses import dataclass
from datetime import date

import asyncpg

from projections.accounts import KEY_COLUMNS

# Every bucket of the window comes back as its offset from the window's first day, so the caller
# places it without parsing a date.
_USAGE = """
    coalesce(t.requests, 0)                      AS total_requests,
    coalesce(t.cost_chf, 0)::numeric(38, 9)::text AS total_cost_chf,
    t.last_used_at,
    u.recent_requests, u.recent_cost_chf, u.month_requests, u.month_cost_chf,
    u.day_offsets, u.day_requests, u.day_costs
FROM api_keys k
LEFT JOIN key_usage_totals t ON t.key_id = k.key_id
CROSS JOIN LATERAL (
    SELECT coalesce(sum(d.requests) FILTER (WHERE {in_window}), 0)::bigint AS recent_requests,
           coalesce(sum(d.cost_chf) FILTER (WHERE {in_window}), 0)::numeric(38, 9)::text AS recent_cost_chf,
           coalesce(sum(d.requests) FILTER (WHERE d.day >= {month}), 0)::bigint AS month_requests,
           coalesce(sum(d.cost_chf) FILTER (WHERE d.day >= {month}), 0)::numeric(38, 9)::text
               AS month_cost_chf,
           array_agg(d.day - {first}) FILTER (WHERE {in_window}) AS day_offsets,
           array_agg(d.requests) FILTER (WHERE {in_window}) AS day_requests,
           array_agg(d.cost_chf::text) FILTER (WHERE {in_window}) AS day_costs
    FROM key_usage_daily d
    WHERE d.key_id = k.key_id AND d.day >= least({first}, {month})) AS u
"""
_KEY_FIELDS = ", ".join(
    f"k.{column}" if column != "monthly_spend_limit_chf" else f"k.{column}::text AS {column}"
    for column in (name.strip() for name in KEY_COLUMNS.split(","))
)


def _statement(where: str, first: str, today: str, month: str) -> str:
    first, today, month = (f"{parameter}::date" for parameter in (first, today, month))
    in_window = f"d.day BETWEEN {first} AND {today}"
    usage = _USAGE.format(first=first, month=month, in_window=in_window)
    return f"SELECT {_KEY_FIELDS},{usage} WHERE {where}"


_ONE_KEY = _statement("k.key_id = $2 AND k.account_id = $1", "$3", "$4", "$5")
_ACCOUNT_KEYS = _statement("k.account_id = $1", "$2", "$3", "$4") + " ORDER BY k.created_position DESC"


@dataclass(frozen=True)
class Window:
    """The days a key view covers: the 30-day window (first..today) and the month of today (from
    month_start, which is before `first` on the 31st)."""

    first: date
    today: date
    month_start: date


async def key_with_usage(
    connection: asyncpg.Connection, account_id: str, key_id: str, window: Window
) -> asyncpg.Record | None:
    """The key of this account with its usage, or None (also for another account's key)."""
    return await connection.fetchrow(
        _ONE_KEY, account_id, key_id, window.first, window.today, window.month_start
    )


async def keys_with_usage(
    connection: asyncpg.Connection, account_id: str, window: Window
) -> list[asyncpg.Record]:
    """Every key of the account with its usage, newest first."""
    return await connection.fetch(_ACCOUNT_KEYS, account_id, window.first, window.today, window.month_start)
