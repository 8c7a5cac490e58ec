"""The key object of the API (id, name, mask, status, usage), from the key and usage projections."""

from datetime import date
from decimal import Decimal

import asyncpg

from events.errors import KeyNotFound
from events.usage import chf_text
from projections import accounts, usage
from projections.usage import KeyUsage
from service.http.responses import DailyUsage, KeyObject, RecentUsage, UsageSummary
from service.store.db import Pool


def usage_block(key_usage: KeyUsage | None, days: list[date]) -> UsageSummary:
    key_usage = key_usage or KeyUsage()
    daily = [(day, *key_usage.daily.get(day, (0, Decimal(0)))) for day in days]
    return UsageSummary(
        total_requests=key_usage.requests,
        total_cost_chf=chf_text(key_usage.cost_chf),
        last_30_days=RecentUsage(
            requests=sum(requests for _, requests, _ in daily),
            cost_chf=chf_text(sum((cost for _, _, cost in daily), Decimal(0))),
            daily=[DailyUsage(day.isoformat(), requests, chf_text(cost)) for day, requests, cost in daily],
        ),
    )


def key_object(row, key_usage: KeyUsage | None, days: list[date]) -> KeyObject:
    """`row`: an api_keys row, from the table or folded from the log (projections.key_rows)."""
    return KeyObject(
        id=row["key_id"],
        name=row["name"],
        masked_key=row["masked_key"],
        status=row["status"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=key_usage.last_used_at if key_usage else None,
        usage=usage_block(key_usage, days),
    )


async def key_objects(connection: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[KeyObject]:
    days = usage.window()
    usage_by_key = await usage.usage_of_keys(connection, [row["key_id"] for row in rows], days[0])
    return [key_object(row, usage_by_key.get(row["key_id"]), days) for row in rows]


async def one_key_object(pool: Pool, account_id: str, key_id: str) -> KeyObject:
    """The key of this account, or KeyNotFound (also for another account's key)."""
    async with pool.acquire() as connection:
        row = await accounts.get_key(connection, account_id, key_id)
        if row is None:
            raise KeyNotFound()
        [key] = await key_objects(connection, [row])
    return key
