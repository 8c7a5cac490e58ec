"""The key object of the API (id, name, mask, status, usage), from the key and usage projections, or
folded from the log (time travel)."""

import functools
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg

from events.errors import KeyNotFound
from events.usage import chf_text
from projections import key_view, usage
from projections.key_view import Window
from projections.usage import KeyUsage
from service.http.responses import DailyUsage, KeyObject, MonthUsage, RecentUsage, UsageSummary
from service.store.db import Pool

ZERO_CHF = chf_text(Decimal(0))


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
    """`row`: an api_keys row folded from the log (projections.key_rows) as it stood at `now`, with
    that moment's usage (time travel)."""
    limit = row["monthly_spend_limit_chf"]
    return KeyObject(
        **_lifecycle_fields(row, now),
        last_used_at=key_usage.last_used_at if key_usage else None,
        monthly_spend_limit_chf=None if limit is None else chf_text(limit),
        usage=usage_block(key_usage, days),
    )


def _lifecycle_fields(row, now: datetime) -> dict:
    """The fields of a key object that come from its api_keys row alone."""
    return {
        "id": row["key_id"],
        "name": row["name"],
        "masked_key": row["masked_key"],
        "status": status_at(row, now),
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
        "expires_at": row["expires_at"],
        "rotated_from": row["rotated_from"],
        "rotated_to": row["rotated_to"],
        "revoked_reason": row["revoked_reason"],
    }


def status_at(row, now: datetime) -> str:
    if row["status"] == "revoked":
        return "revoked"
    expires_at = row["expires_at"]
    return "expired" if expires_at is not None and expires_at <= now else "active"


@functools.lru_cache(maxsize=4)
def window_of(today: date) -> tuple[Window, tuple[str, ...]]:
    """Today's window and its days as the API writes them, made once a day."""
    days = usage.window(today)
    return Window(days[0], today, month_start(days)), tuple(day.isoformat() for day in days)


def viewed_key_object(row: asyncpg.Record, days: tuple[str, ...], now: datetime) -> KeyObject:
    """The key object of a projections.key_view row, whose amounts are CHF text already."""
    daily = [DailyUsage(day, 0, ZERO_CHF) for day in days]
    if (offsets := row["day_offsets"]) is not None:
        for offset, requests, cost in zip(offsets, row["day_requests"], row["day_costs"], strict=True):
            daily[offset] = DailyUsage(days[offset], requests, cost)
    return KeyObject(
        **_lifecycle_fields(row, now),
        last_used_at=row["last_used_at"],
        monthly_spend_limit_chf=row["monthly_spend_limit_chf"],
        usage=UsageSummary(
            total_requests=row["total_requests"],
            total_cost_chf=row["total_cost_chf"],
            last_30_days=RecentUsage(row["recent_requests"], row["recent_cost_chf"], daily),
            this_month=MonthUsage(row["month_requests"], row["month_cost_chf"]),
        ),
    )


async def key_objects(connection: asyncpg.Connection, account_id: str) -> list[KeyObject]:
    """Every key of the account, newest first."""
    now = datetime.now(UTC)
    window, days = window_of(now.date())
    return [
        viewed_key_object(row, days, now)
        for row in await key_view.keys_with_usage(connection, account_id, window)
    ]


async def one_key_object(pool: Pool, account_id: str, key_id: str) -> KeyObject:
    """The key of this account, or KeyNotFound (also for another account's key)."""
    now = datetime.now(UTC)
    window, days = window_of(now.date())
    async with pool.acquire() as connection:
        row = await key_view.key_with_usage(connection, account_id, key_id, window)
    if row is None:
        raise KeyNotFound()
    return viewed_key_object(row, days, now)
