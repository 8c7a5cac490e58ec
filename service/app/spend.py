"""What each key with a monthly spend limit has cost in the current UTC month, held in memory for
verification, and followed from the monthly usage projection (key_usage_monthly).

The month is the UTC calendar month of the clock. Once it is over, the costs held are of a month
that has ended: no key is over its limit until the costs of the new month are loaded (the next
catch-up, within a second), which is how "the start of the next UTC month lifts it" holds with no
event at midnight.
"""

from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg

from projections import usage

ZERO = Decimal(0)


def month_of(moment: float) -> date:
    return datetime.fromtimestamp(moment, UTC).date().replace(day=1)


def _end_of(month: date) -> float:
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return datetime(following.year, following.month, 1, tzinfo=UTC).timestamp()


class MonthSpend:
    def __init__(self):
        self.month: date | None = None
        self._ends_at = float("-inf")  # POSIX time at which `month` is over
        self._costs: dict[str, Decimal] = {}  # key id -> cost this month, for keys with a limit
        self._position = 0  # the newest key_usage_monthly.last_position read

    def reached(self, key_id: str, limit: Decimal, now: float) -> bool:
        """Whether the key's cost this month has reached `limit`."""
        return now < self._ends_at and self._costs.get(key_id, ZERO) >= limit

    async def catch_up(self, connection: asyncpg.Connection, limited_now: list[str], now: float) -> None:
        """Load what moved; `limited_now`: keys whose limit was just set, whose cost may not be held."""
        month = month_of(now)
        if month != self.month:  # the first load, or a new month: read it whole
            self._begin(month)
        elif limited_now:
            self._costs.update(await usage.month_spend_of(connection, month, limited_now))
        for row in await usage.month_spend_changes(connection, month, self._position):
            self._costs[row["key_id"]] = row["cost_chf"]
            self._position = row["last_position"]

    def _begin(self, month: date) -> None:
        self.month, self._ends_at, self._costs, self._position = month, _end_of(month), {}, 0

    def forget(self, key_id: str) -> None:
        self._costs.pop(key_id, None)
