"""The `usage` block of a key object, from the usage projections."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from projections.usage import KeyUsage
from service.responses import DailyUsage, RecentUsage, UsageSummary

WINDOW_DAYS = 30


def chf(amount: Decimal) -> str:
    return f"{amount:.9f}"


def window(today: date | None = None) -> list[date]:
    """The last 30 UTC days, oldest first, today last."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(WINDOW_DAYS - 1, -1, -1)]


def usage_block(usage: KeyUsage | None, days: list[date]) -> UsageSummary:
    usage = usage or KeyUsage()
    daily = [(day, *usage.daily.get(day, (0, Decimal(0)))) for day in days]
    return UsageSummary(
        total_requests=usage.requests,
        total_cost_chf=chf(usage.cost_chf),
        last_30_days=RecentUsage(
            requests=sum(requests for _, requests, _ in daily),
            cost_chf=chf(sum((cost for _, _, cost in daily), Decimal(0))),
            daily=[DailyUsage(day.isoformat(), requests, chf(cost)) for day, requests, cost in daily],
        ),
    )
