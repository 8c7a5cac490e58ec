"""Time travel: an account's keys as they stood at a past moment, computed from the log alone.

"As they stood at T" means: folded from the events recorded at or before T (`recorded_at`, the
database clock read under APPEND_LOCK, so it grows with the position). The projection tables are
not read: their usage lags the log, and they only know the present.

An answer for a given T never changes later: the reads wait until every event recorded up to the
database's current time has committed (`eventstore.settled_clock`), and a T after that time is
refused, since its answer could still change.
"""

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from events.chain import timestamp_text
from events.log import account_stream
from events.model import account_event_decoder
from projections import usage
from projections.key_rows import KeyRow, key_rows
from projections.usage import KeyUsage
from service.app.errors import MomentInFuture
from service.store import eventstore


@dataclass(frozen=True)
class PastKeys:
    rows: list[KeyRow]  # newest first
    usage: dict[str, KeyUsage]  # by key id, for keys that had been used
    days: list[date]  # the 30 UTC days ending on the as_of day


async def keys_as_of(connection: asyncpg.Connection, account_id: str, as_of: datetime) -> PastKeys:
    await _wait_for_appends_recorded_up_to(connection, as_of)
    stored = await eventstore.read_stream(connection, account_stream(account_id), recorded_up_to=as_of)
    rows = key_rows(account_event_decoder.decode(event.data) for event in stored)
    if not rows:
        return PastKeys(rows=[], usage={}, days=[])
    past_usage = await usage.usage_recorded_up_to(connection, account_id, as_of)
    return PastKeys(rows=rows, usage=past_usage, days=usage.window(as_of.date()))


async def _wait_for_appends_recorded_up_to(connection: asyncpg.Connection, as_of: datetime) -> None:
    now = await eventstore.settled_clock(connection)
    if as_of > now:
        raise MomentInFuture(
            f"as_of is in the future (the log's clock reads {timestamp_text(now)}); ask for a past moment, "
            "or leave as_of out for the keys as they are now."
        )
