"""The `usage` block of a key object."""

from datetime import UTC, date, datetime, timedelta

ZERO_CHF = "0.000000000"
WINDOW_DAYS = 30


def last_30_days(today: date | None = None) -> list[date]:
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(WINDOW_DAYS - 1, -1, -1)]


def empty_usage() -> dict:
    daily = [{"date": day.isoformat(), "requests": 0, "cost_chf": ZERO_CHF} for day in last_30_days()]
    return {
        "total_requests": 0,
        "total_cost_chf": ZERO_CHF,
        "last_30_days": {"requests": 0, "cost_chf": ZERO_CHF, "daily": daily},
    }
