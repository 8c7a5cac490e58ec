"""Recording usage: a gateway's batch checked whole against the log, then appended once per request."""

from datetime import UTC, datetime

from events.usage import UsageReport, check_batch
from projections import accounts
from service.store import db, eventstore


async def record(pool: db.Pool, reports: list[UsageReport], metadata: dict) -> tuple[int, int]:
    """Store the batch, or refuse all of it (InvalidUsage, UsageRejected); returns (accepted, duplicates)."""
    async with pool.acquire() as connection:
        account_of = await accounts.accounts_of_keys(connection, list({r.key_id for r in reports}))
        recorded = check_batch(reports, set(account_of), datetime.now(UTC))
        async with connection.transaction():
            accepted = await eventstore.append_usage(
                connection, [(account_of[event.key_id], event) for event in recorded], metadata
            )
    return accepted, len(recorded) - accepted
