"""The in-process cache that answers key verification without a database round trip.

It holds every active key (digest -> id, account, expiry instant, spend limit: service/app/keystore.py),
every subscription, and this month's cost of the keys with a limit (service/app/spend.py), and follows
changes: a dedicated connection LISTENs for lifecycle appends and projected usage, and catches up by
position on every notification, every second, and after every reconnect. The cache only answers while
it can prove it is fresh (listening, and a catch-up succeeded within STALE_AFTER seconds); otherwise
verification reads the database, and fails closed if that fails too.
"""

import asyncio
import contextlib
import logging
import time

import asyncpg

from events.log import LIFECYCLE_CHANNEL, PROJECTED_CHANNEL, RESET_CHANNEL
from projections import accounts
from service.app.keystore import KeyEntry, KeyStore
from service.app.spend import MonthSpend
from service.store.db import DATABASE_UNAVAILABLE, Pool

OWN_CATCH_UP_WAIT = 1.0  # seconds a command's answer waits for this process's key cache, at most
STALE_AFTER = 3.0
POLL_INTERVAL = 1.0
PAGE = 2_000  # rows held at once while loading: the peak of a first load is the store plus one page
log = logging.getLogger(__name__)


class KeyCache:
    """Holds the active keys only: a revoked key and an unknown one get the same answer."""

    def __init__(self):
        self._empty()
        self._listening = False
        self._confirmed_at = float("-inf")  # time.monotonic() of the last successful catch-up
        self._wake = asyncio.Event()
        self.warmed = asyncio.Event()  # set after the first complete load
        # Catch-ups are numbered as they begin; `_covered` is the number of the last one that succeeded.
        self._begun = self._covered = 0
        self._reload = False  # a replay swap rewrote the projections: load everything again
        self._catching_up = asyncio.Lock()  # one catch-up at a time, so an older read never lands last

    def _empty(self) -> None:
        self._keys = KeyStore()
        self._subscribed: set[str] = set()
        self._key_position = 0
        self._subscription_position = 0
        self._spend = MonthSpend()
        # Keys whose limit may be new: the spend they already have is loaded next. Kept until that
        # load has succeeded, so a catch-up that fails in between does not lose them.
        self._newly_limited: list[str] = []

    @property
    def fresh(self) -> bool:
        return self._listening and time.monotonic() - self._confirmed_at < STALE_AFTER

    @property
    def size(self) -> int:
        """How many active keys it holds."""
        return len(self._keys)

    @property
    def seconds_since_confirmed(self) -> float:
        """Since the last catch-up that succeeded (infinite before the first)."""
        return time.monotonic() - self._confirmed_at

    def key(self, digest: bytes) -> KeyEntry | None:
        """The active key with this digest, or None."""
        return self._keys.get(digest)

    def subscribed(self, account_id: str) -> bool:
        return account_id in self._subscribed

    def over_limit(self, entry: KeyEntry, now: float) -> bool:
        """The key's cost this UTC month has reached its monthly spend limit."""
        return entry.limit is not None and self._spend.reached(entry.key_id, entry.limit, now)

    async def follow(self, connection: asyncpg.Connection) -> None:
        """Follow changes on this connection until it is lost (the shell then gives us a new one)."""
        try:
            await self._follow(connection)
        finally:
            self._listening = False

    async def _follow(self, connection: asyncpg.Connection) -> None:
        lost = asyncio.Event()

        def on_termination(_connection) -> None:
            self._listening = False  # at once: from now on verification asks the database
            lost.set()
            self._wake.set()

        connection.add_termination_listener(on_termination)
        await connection.add_listener(LIFECYCLE_CHANNEL, lambda *_: self._wake.set())
        await connection.add_listener(PROJECTED_CHANNEL, lambda *_: self._wake.set())
        await connection.add_listener(RESET_CHANNEL, lambda *_: self._reload_all())
        # Listen first, then catch up: nothing committed in between can be missed. The cache calls
        # itself fresh only once that catch-up has returned.
        while not lost.is_set():
            self._wake.clear()
            await self.catch_up(connection)
            self._confirmed_at = time.monotonic()
            self._listening = True
            self.warmed.set()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._wake.wait()

    def _reload_all(self) -> None:
        self._reload = True
        self._wake.set()

    async def after_own_command(self, pool: Pool) -> None:
        """After a lifecycle command of this process: its own cache reflects it before the answer.

        A catch-up that began after the command committed has seen it: with many commands at once,
        one catch-up serves all those that committed before it began.

        Best effort: the command has committed, so a database that fails now must not turn its answer
        (a new key shown only once) into an error; the listener catches up when it can."""
        committed_after = self._begun
        try:
            # Bounded: the listener may hold the catch-up lock on a connection that hangs.
            async with asyncio.timeout(OWN_CATCH_UP_WAIT), self._catching_up:
                if self._covered > committed_after:
                    return
                async with pool.acquire() as connection:
                    await self._numbered_catch_up(connection)
        except DATABASE_UNAVAILABLE as error:
            log.warning("key cache not caught up after a command (%s)", type(error).__name__)

    async def catch_up(self, connection: asyncpg.Connection) -> None:
        """Apply every change past the positions seen so far. The listener calls it on each hint; a
        handler calls it after its own lifecycle command, so this process refuses a key it has just
        revoked even if its listener has died and does not know it yet."""
        async with self._catching_up:
            await self._numbered_catch_up(connection)

    async def _numbered_catch_up(self, connection: asyncpg.Connection) -> None:
        self._begun += 1
        number = self._begun
        await self._catch_up(connection)
        self._covered = number

    async def _catch_up(self, connection: asyncpg.Connection) -> None:
        if self._reload:
            # The tables were rewritten: what is held proves nothing now. Emptied first (never two
            # copies of a million keys at once), and not fresh until the load below has returned,
            # so verification asks the database meanwhile. A load that fails halfway goes on from
            # its positions at the next catch-up, as a first load does.
            self._reload = False  # first: a reset notified during the load asks for another one
            self._confirmed_at = float("-inf")
            self._empty()
        # In pages (keyset on updated_position, unique: one event changes one key), each applied to
        # the store at once, so a first load of a million keys never holds all their rows.
        while rows := await accounts.key_changes(connection, self._key_position, PAGE):
            for row in rows:
                if row["active"]:
                    expires_at, limit = row["expires_at"], row["monthly_spend_limit_chf"]
                    self._keys.put(
                        row["key_digest"],
                        row["key_id"],
                        row["account_id"],
                        None if expires_at is None else expires_at.timestamp(),
                        limit,
                    )
                    if limit is not None:
                        self._newly_limited.append(row["key_id"])
                else:
                    self._keys.remove(row["key_digest"])
                    self._spend.forget(row["key_id"])
            self._key_position = rows[-1]["updated_position"]
        await self._spend.catch_up(connection, self._newly_limited, time.time())
        self._newly_limited = []
        for row in await accounts.subscription_changes(connection, self._subscription_position):
            if row["active"]:
                self._subscribed.add(row["account_id"])
            else:
                self._subscribed.discard(row["account_id"])
            self._subscription_position = row["updated_position"]
