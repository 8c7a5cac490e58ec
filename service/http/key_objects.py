"""The key object of the API (id, name, mask, status, usage), from the key and usage projections."""

from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg

from events.errors import KeyNotFound
from events.usage import chf_text
from projections import accounts, usage
from projections.usage import KeyUsage
from service.http.responses import DailyUsage, KeyObject, MonthUsage, RecentUsage, UsageSummary
from service.store.db import Pool


def usage_block(key_usage: KeyUsage | None, days: list[date]) -> UsageSummary:
    """`days`: the 30 UTC days of the window, today (or the as_of day) last; the month is today's."""
    key_usage = key_usage or KeyUsage()
    daily = [(day, *key_usage.daily.get(day, (0, Decimal(0)))) for day in days]
    month = [
        (requests, cost) for day, (requests, cost) in key_usage.daily.items() if day >= month_start(days)
    ]
    return UsageSummary(
        total_requests=key_usage.requests,
        total_cost_chf=chf_text(key_usage.cost_chf),
        last_30_days=RecentUsage(
            requests=sum(requests for _, requests, _ in daily),
            cost_chf=chf_text(sum((cost for _, _, cost in daily), Decimal(0))),
            daily=[DailyUsage(day.isoformat(), requests, chf_text(cost)) for day, requests, cost in daily],
        ),
        this_month=MonthUsage(
            requests=sum(requests for requests, _ in month),
            cost_chf=chf_text(sum((cost for _, cost in month), Decimal(0))),
        ),
    )


def month_start(days: list[date]) -> date:
    return days[-1].replace(day=1)


def key_object(row, key_usage: KeyUsage | None, days: list[date], now: datetime) -> KeyObject:
    """`row`: an api_keys row, from the table or folded from the log (projections.key_rows), as it
    stands at `now`."""
    limit = row["monthly_spend_limit_chf"]
    return KeyObject(
        id=row["key_id"],
        name=row["name"],
        masked_key=row["masked_key"],
        status=status_at(row, now),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=key_usage.last_used_at if key_usage else None,
        expires_at=row["expires_at"],
        monthly_spend_limit_chf=None if limit is None else chf_text(limit),
        rotated_from=row["rotated_from"],
        rotated_to=row["rotated_to"],
        revoked_reason=row["revoked_reason"],
        usage=usage_block(key_usage, days),
    )


def status_at(row, now: datetime) -> str:
    if row["status"] == "revoked":
        return "revoked"
    expires_at = row["expires_at"]
    return "expired" if expires_at is not None and expires_at <= now else "active"


async def key_objects(connection: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[KeyObject]:
    now = datetime.now(UTC)
    days = usage.window(now.date())
    since = min(days[0], month_start(days))  # day 31 of a month: its first day is not in the window
    usage_by_key = await usage.usage_of_keys(connection, [row["key_id"] for row in rows], since)
    return [key_object(row, usage_by_key.get(row["key_id"]), days, now) for row in rows]


async def one_key_object(pool: Pool, account_id: str, key_id: str) -> KeyObject:
    """The key of this account, or KeyNotFound (also for another account's key)."""
    async with pool.acquire() as connection:
        row = await accounts.get_key(connection, account_id, key_id)
        if row is None:
            raise KeyNotFound()
        [key] = await key_objects(connection, [row])
    return key
