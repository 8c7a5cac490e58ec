"""The log's contract: what every reader and writer of the event log agrees on.

An event as the log holds it, the streams events belong to, the advisory locks that order the
writers, and the channels that wake the readers. Pure: the store, the projections and the
application all name these, so each is defined once, here.
"""

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


def account_stream(account_id: str) -> str:
    """The stream of an account's lifecycle events (keys and subscription), versioned."""
    return f"account-{account_id}"


def usage_stream(key_id: str) -> str:
    """Where a key's usage events are filed; unversioned (idempotency is by request id)."""
    return f"usage-{key_id}"


# Advisory lock ids (any constants, shared by every keyledger process on a database).
MIGRATION_LOCK = 0x6B65796C65646701  # one migrator at a time
# Every append holds it from before its rows get positions until commit, so positions become
# visible in order and a reader of `position > last_seen` never skips a late commit.
APPEND_LOCK = 0x6B65796C65646702
PROJECTOR_LOCK = 0x6B65796C65646703  # the one projector per database
TREE_LOCK = 0x6B65796C65646704  # the one Merkle tree writer per database
REPLAY_LOCK = 0x6B65796C65646710  # one replay at a time: replays share the shadow schema
# The first key of the two-key advisory locks (a space apart from the one-key locks above) that a
# command holds on its account, the second key being a hash of the account id: one command per account.
ACCOUNT_LOCKS = 0x6B657901

# NOTIFY channels. A notification is delivered on commit and lost while nobody listens: listeners
# treat it as a hint to catch up from their last position, never as the data itself.
LIFECYCLE_CHANNEL = "keyledger_lifecycle"  # a lifecycle append committed (keys, subscriptions)
USAGE_CHANNEL = "keyledger_usage"  # a usage append committed
PROJECTED_CHANNEL = "keyledger_usage_projected"  # the projector committed a batch (spend limits move)
# A replay swap rewrote api_keys or subscriptions: rows put back at old positions are invisible to a
# cache that follows changes by position, so key caches reload everything on it.
RESET_CHANNEL = "keyledger_reset"
