"""An event as the log holds it: the event's JSON plus its place in the log."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    stream_id: str
    version: int | None
    account_id: str
    type: str
    data: bytes  # the event's JSON, decoded by whoever reads it
    metadata: bytes
    recorded_at: datetime
