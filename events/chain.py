"""The hash chain over the log: every event's hash covers its content and the hash before it.

    hash(e_k) = SHA-256(hash(e_{k-1}) || canonical(e_k))        hash(e_0) = 32 zero bytes

Changing, removing, inserting or reordering an event changes every hash from there on, so an
auditor holding one published (position, hash) pair can check everything up to it. Pure: the event
store computes it at append time, the audit tools recompute it from an export or the database.
"""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

GENESIS = bytes(32)
# The fields an event's hash covers, as they appear in an export line.
COVERED = (
    "position",
    "stream_id",
    "version",
    "account_id",
    "type",
    "data",
    "metadata",
    "recorded_at",
    "idempotency_key",
)

_canonical = msgspec.json.Encoder(order="sorted")


def timestamp_text(moment: datetime) -> str:
    """The one text form of recorded_at that is hashed and exported."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical(record: dict) -> bytes:
    """Sorted-key compact JSON of the covered fields: the same bytes from the database or a file."""
    return _canonical.encode({field: record[field] for field in COVERED})


def link(previous: bytes, record: dict) -> bytes:
    return hashlib.sha256(previous + canonical(record)).digest()


# Where position and recorded_at sit in the canonical form (the keys are sorted, and a quote inside a
# string is always escaped, so this text occurs exactly once).
_DRAWN = b'"position":0,"recorded_at":""'


def canonical_around_drawn(record: dict) -> tuple[bytes, bytes]:
    """canonical(record) before and after its position and recorded_at, which an append only learns
    under its lock: the bulk of the encoding happens before it."""
    before, _, after = canonical({**record, "position": 0, "recorded_at": ""}).partition(_DRAWN)
    return before + b'"position":', after


def link_drawn(previous: bytes, around: tuple[bytes, bytes], position: int, recorded_at: bytes) -> bytes:
    """link(previous, record) from canonical_around_drawn(record) and the drawn values (recorded_at as
    timestamp_text gives it, encoded)."""
    before, after = around
    return hashlib.sha256(
        b"".join((previous, before, str(position).encode(), b',"recorded_at":"', recorded_at, b'"', after))
    ).digest()


@dataclass(frozen=True)
class Break:
    position: int
    problem: str


class ChainChecker:
    """Feed records in file or log order; `check` names the first place the history breaks."""

    def __init__(self, anchor: bytes | None = None):
        self._anchor = anchor  # the hash the first record must follow; None: trust its prev_hash
        self._previous: dict | None = None
        self._before_previous: dict | None = None
        self.last: dict | None = None

    def check(self, record: dict) -> Break | None:
        position = record["position"]
        prev_hash, recorded_hash = bytes.fromhex(record["prev_hash"]), bytes.fromhex(record["hash"])
        previous, before = self._previous, self._before_previous
        self._before_previous, self._previous, self.last = previous, record, record
        if link(prev_hash, record) != recorded_hash:
            return Break(
                position, f"position {position}: the event does not match its hash (it was changed or forged)"
            )
        if previous is None:
            if self._anchor is not None and prev_hash != self._anchor:
                return Break(position, f"position {position}: does not follow the anchor it should follow")
            return None
        if prev_hash == bytes.fromhex(previous["hash"]):
            if position <= previous["position"]:
                return Break(
                    position, f"position {position}: comes after position {previous['position']} (reordered)"
                )
            return None
        if before is not None and prev_hash == bytes.fromhex(before["hash"]):
            return Break(
                previous["position"],
                f"position {previous['position']}: inserted; position {position} follows position {before['position']}",
            )
        return Break(
            position,
            f"position {position}: the event before it is missing or out of order "
            f"(it does not follow position {previous['position']})",
        )
