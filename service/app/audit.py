"""Audit: export the log with its hash chain, publish a head digest, verify a file or the database.

The commands (`keyledger export`, `keyledger audit digest|verify`) stream page by page, so memory
stays constant whatever the size of the log. An export record also names the event's leaf in the
Merkle tree (`leaf_index`, null until the tree writer reaches it), so that each event of a filtered
export can be proven against a signed checkpoint; the hash chain does not cover it.
"""

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from events import chain
from service.store import eventstore, tree

PAGE = 5000


def _record(row: asyncpg.Record, leaf_index: int | None) -> dict:
    return {
        "position": row["position"],
        "stream_id": row["stream_id"],
        "version": row["version"],
        "account_id": row["account_id"],
        "type": row["type"],
        "data": msgspec.json.decode(row["data"]),
        "metadata": msgspec.json.decode(row["metadata"]),
        "recorded_at": chain.timestamp_text(row["recorded_at"]),
        "idempotency_key": row["idempotency_key"],
        "prev_hash": (row["prev_hash"] or chain.GENESIS).hex(),
        "hash": row["hash"].hex() if row["hash"] is not None else None,
        "leaf_index": leaf_index,
    }


async def events_page(
    connection: asyncpg.Connection,
    after: int = 0,
    limit: int = PAGE,
    account_id: str | None = None,
    since: datetime | None = None,
    leaves: bool = True,
) -> list[dict]:
    """Export records (the covered fields, `prev_hash`, `hash` and `leaf_index`) after a position, in
    log order; without `leaves`, `leaf_index` is null (the chain's verifier does not need it)."""
    rows = await eventstore.read_chained(connection, after, limit, account_id, since)
    positions = [row["position"] for row in rows]
    indexes = await tree.leaf_indexes(connection, positions) if leaves and rows else [None] * len(rows)
    return [_record(row, leaf) for row, leaf in zip(rows, indexes, strict=True)]


async def all_records(connection: asyncpg.Connection, **filters) -> AsyncIterator[dict]:
    after = filters.pop("after", 0)
    while page := await events_page(connection, after, PAGE, **filters):
        for record in page:
            yield record
        after = page[-1]["position"]


async def head_digest(connection: asyncpg.Connection) -> dict:
    row = await eventstore.head(connection)
    if row is None:
        return {"position": 0, "hash": chain.GENESIS.hex()}
    return {"position": row["position"], "hash": row["hash"].hex()}


@dataclass
class Verdict:
    checked: int = 0
    unchained: int = 0  # events recorded before the chain existed (migration 004)
    last_position: int = 0
    broken: chain.Break | None = None

    def __str__(self) -> str:
        if self.broken:
            return f"BROKEN at position {self.broken.position}: {self.broken.problem}"
        note = f" ({self.unchained} older events carry no hash)" if self.unchained else ""
        return f"OK: {self.checked} events verified, up to position {self.last_position}{note}"


class Verifier:
    """Checks records one by one against the chain and, at the end, against a published digest."""

    def __init__(self, digest: dict | None = None):
        self._digest, self._checker, self.verdict = digest, chain.ChainChecker(), Verdict()
        self._digest_seen = digest is None or digest["position"] == 0

    def feed(self, record: dict) -> bool:
        """False once the history is broken (the verdict says where)."""
        if record["hash"] is None:
            self.verdict.unchained += 1
            return True
        self.verdict.broken = self._checker.check(record)
        self.verdict.checked += 1
        self.verdict.last_position = record["position"]
        if not self.verdict.broken and self._digest and record["position"] == self._digest["position"]:
            self._digest_seen = True
            if record["hash"] != self._digest["hash"]:
                self.verdict.broken = chain.Break(
                    record["position"],
                    f"position {record['position']}: the history up to here differs from the published "
                    "digest (events before it were rewritten with recomputed hashes)",
                )
        return self.verdict.broken is None

    def finish(self) -> Verdict:
        verdict, digest = self.verdict, self._digest
        if verdict.broken or self._digest_seen:
            return verdict
        if verdict.last_position < digest["position"]:
            problem = (
                f"the published digest covers position {digest['position']}, but the history ends at "
                f"position {verdict.last_position}: the events after it are missing"
            )
        else:
            problem = (
                f"the event at position {digest['position']}, which the published digest names, is missing"
            )
        verdict.broken = chain.Break(digest["position"], problem)
        return verdict


def verify_lines(lines: Iterable[bytes], digest: dict | None = None) -> Verdict:
    verifier = Verifier(digest)
    for line in lines:
        if line.strip() and not verifier.feed(msgspec.json.decode(line)):
            break
    return verifier.finish()


async def verify_database(connection: asyncpg.Connection, digest: dict | None = None) -> Verdict:
    verifier = Verifier(digest)
    async for record in all_records(connection, leaves=False):
        if not verifier.feed(record):
            break
    return verifier.finish()
