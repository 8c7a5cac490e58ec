"""The month of the spend limits: UTC calendar months, over at their last instant."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from service.app.spend import MonthSpend, month_of


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("moment", "month"),
    [
        (at(2026, 12, 31, 23, 59, 59), date(2026, 12, 1)),
        (at(2027, 1, 1), date(2027, 1, 1)),
        (at(2028, 2, 29, 12), date(2028, 2, 1)),
    ],
)
def test_the_month_is_the_utc_calendar_month(moment, month):
    assert month_of(moment) == month


async def test_a_new_utc_month_lifts_the_limit_before_anything_is_reloaded():
    spend = MonthSpend()
    spend._begin(date(2026, 12, 1))
    spend._costs["key_1"] = Decimal("30")
    limit = Decimal("25")
    assert spend.reached("key_1", limit, at(2026, 12, 31, 23, 59, 59))
    assert not spend.reached("key_1", Decimal("30.000000001"), at(2026, 12, 31, 23, 59, 59))
    assert not spend.reached("key_1", limit, at(2027, 1, 1))
    assert not spend.reached("key_other", limit, at(2026, 12, 15))
