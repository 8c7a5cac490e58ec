"""Time travel: an account's keys as they stood at a past moment, computed from the log alone.

"As they stood at T" means: folded from the events recorded at or before T (`recorded_at`, the
database clock read under APPEND_LOCK, so it grows with the position). The projections are not
read: their usage lags the log, and they only know the present.

An answer for a given T never changes later. An append holds APPEND_LOCK from before it reads the
clock for `recorded_at` until it commits, so after waiting for that lock (shared, then released at
once) every event recorded up to the database's current time has committed, and the reads that
follow see all of them. A T after that time is refused: its answer could still change.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated

import asyncpg
import msgspec
from multidict import MultiMapping

from events.chain import timestamp_text
from events.model import account_event_decoder
from projections.key_rows import KeyRow, key_rows
from projections.usage import KeyUsage
from service.commands import stream_of
from service.errors import ApiError
from service.eventstore import APPEND_LOCK
from service.usage_view import window

PARAMETER = "as_of"
EXPECTED_FORMAT = f"{PARAMETER} must be an RFC 3339 time with a zone, e.g. 2026-11-01T00:00:00Z"
_ZONED_TIME = Annotated[datetime, msgspec.Meta(tz=True)]
_BEYOND_MICROSECONDS = re.compile(r"(\.[0-9]{6})[0-9]+")

_LIFECYCLE_UP_TO = """
    SELECT data FROM events WHERE stream_id = $1 AND recorded_at <= $2 ORDER BY version"""
# Per key and UTC day of the request, as the usage projections bucket it.
_USAGE_UP_TO = """
    SELECT data->>'key_id'                                               AS key_id,
           ((data->>'occurred_at')::timestamptz AT TIME ZONE 'UTC')::date AS day,
           count(*)                                                      AS requests,
           sum((data->>'cost_chf')::numeric)                             AS cost_chf,
           max((data->>'occurred_at')::timestamptz)                      AS last_used_at
    FROM events
    WHERE account_id = $1 AND type = 'UsageRecorded' AND recorded_at <= $2
    GROUP BY 1, 2"""


@dataclass(frozen=True)
class PastKeys:
    rows: list[KeyRow]  # newest first
    usage: dict[str, KeyUsage]  # by key id, for keys that had been used
    days: list[date]  # the 30 UTC days ending on the as_of day


def as_of_parameter(query: MultiMapping[str]) -> datetime | None:
    """The `as_of` of a list request in UTC, or None for the present state.

    Any other parameter is refused: a misspelt `as_of` must not quietly answer with the present.
    """
    unknown = sorted(set(query) - {PARAMETER})
    if unknown:
        raise ApiError(
            400, "invalid_request", f"Unknown query parameter {unknown[0]!r}; this endpoint takes only as_of."
        )
    texts = query.getall(PARAMETER, [])
    if not texts:
        return None
    if len(texts) > 1:
        raise ApiError(400, "invalid_request", f"Give {PARAMETER} once.")
    return _utc_moment(texts[0])


def _utc_moment(text: str) -> datetime:
    hint = " (in a URL, write the + of an offset as %2B)" if " " in text else ""
    # Cut digits beyond microseconds instead of rounding up past the moment that was asked for.
    try:
        moment = msgspec.convert(_BEYOND_MICROSECONDS.sub(r"\1", text), _ZONED_TIME)
    except msgspec.ValidationError:
        raise ApiError(400, "invalid_request", f"{EXPECTED_FORMAT}{hint}; got {text[:64]!r}.") from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ApiError(
            400, "invalid_request", f"{PARAMETER} must lie within the years 1 to 9999 UTC."
        ) from None


async def keys_as_of(connection: asyncpg.Connection, account_id: str, as_of: datetime) -> PastKeys:
    await _wait_for_appends_recorded_up_to(connection, as_of)
    records = await connection.fetch(_LIFECYCLE_UP_TO, stream_of(account_id), as_of)
    rows = key_rows(account_event_decoder.decode(record["data"]) for record in records)
    if not rows:
        return PastKeys(rows=[], usage={}, days=[])
    groups = await connection.fetch(_USAGE_UP_TO, account_id, as_of)
    return PastKeys(rows=rows, usage=_usage_by_key(groups), days=window(as_of.date()))


def _usage_by_key(groups: list[asyncpg.Record]) -> dict[str, KeyUsage]:
    """Totals and daily buckets from the (key, day) groups; the sums stay exact decimals."""
    usage: dict[str, KeyUsage] = {}
    for group in groups:
        key = usage.setdefault(group["key_id"], KeyUsage())
        key.requests += group["requests"]
        key.cost_chf += group["cost_chf"]
        if key.last_used_at is None or group["last_used_at"] > key.last_used_at:
            key.last_used_at = group["last_used_at"]
        key.daily[group["day"]] = (group["requests"], group["cost_chf"])
    return usage


async def _wait_for_appends_recorded_up_to(connection: asyncpg.Connection, as_of: datetime) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock_shared($1)", APPEND_LOCK)
        now = await connection.fetchval("SELECT clock_timestamp()")
    if as_of > now:
        raise ApiError(
            422,
            "unprocessable",
            f"{PARAMETER} is in the future (the log's clock reads {timestamp_text(now)}); ask for a past moment, "
            "or leave as_of out for the keys as they are now.",
        )
