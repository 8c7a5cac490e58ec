"""A mixed event log written as production writes it: lifecycle commands on many accounts through
`service.commands.execute`, and usage in big batches through `service.eventstore.append_usage`, from
several connections at once."""

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from events import apikey
from events.account import CreateKey, RevokeKey, SetSubscription, UpdateKey
from events.errors import DomainError
from events.model import UsageRecorded
from service.app import commands
from service.store import db, eventstore

# Offsets around the world, so that local midnight and UTC midnight differ.
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
METADATA = {"actor": "mixed log"}


class MixedLog:
    """Writes to one database; remembers every key it created (key id -> account id)."""

    def __init__(self, database_url: str, pool: db.Pool, seed: int):
        self._database_url, self._pool, self._seed = database_url, pool, seed
        self._rng = random.Random(seed)
        self.keys: dict[str, str] = {}
        self._usage_written = 0

    async def open_accounts(self, count: int, writers: int = 8) -> None:
        """Accounts with an active subscription and one to four keys each."""
        accounts = [f"acct_{n:04d}" for n in range(count)]

        async def open_some(mine: list[str]) -> None:
            for account in mine:
                await self._execute(account, SetSubscription(active=True, plan="pro"))
                for _ in range(self._rng.randint(1, 4)):
                    await self._create(account)

        await asyncio.gather(*(open_some(accounts[n::writers]) for n in range(writers)))

    async def change_lifecycle(self, changes: int, writers: int = 4) -> None:
        """Renames, revokes, new keys and subscription changes on random accounts, `writers` at a time
        (several may hit one account: the commands then re-decide or are refused, as in production)."""

        async def change_some(count: int) -> None:
            for _ in range(count):
                key_id = self._rng.choice(list(self.keys))
                account = self.keys[key_id]
                action = self._rng.randrange(5)
                if action == 0:
                    await self._execute(account, UpdateKey(key_id, f"renamed {self._rng.randrange(10**6)}"))
                elif action == 1:
                    await self._execute(account, RevokeKey(key_id))
                elif action == 2:
                    await self._create(account)
                else:
                    plan = self._rng.choice(["pro", "team", None])
                    await self._execute(account, SetSubscription(active=plan is not None, plan=plan or ""))

        await asyncio.gather(*(change_some(changes // writers) for _ in range(writers)))

    async def write_usage(self, events: int, writers: int = 4, batch: int = 5_000) -> None:
        """`events` usage events of the keys known now, in appends of `batch`, on `writers` connections."""

        async def write_some(count: int) -> None:
            connection = await db.connect(self._database_url)
            try:
                for start in range(0, count, batch):
                    usage = [self._usage_event() for _ in range(min(batch, count - start))]
                    async with connection.transaction():
                        await eventstore.append_usage(connection, usage, METADATA)
            finally:
                await connection.close()

        await asyncio.gather(*(write_some(events // writers) for _ in range(writers)))

    def _usage_event(self) -> tuple[str, UsageRecorded]:
        self._usage_written += 1
        key_id = self._rng.choice(list(self.keys))
        moment = datetime.now(UTC) - timedelta(minutes=self._rng.randrange(30 * 24 * 60))
        cost = Decimal(self._rng.randrange(10**6)).scaleb(-self._rng.randrange(10))
        event = UsageRecorded(
            request_id=f"req-{self._seed}-{self._usage_written}",
            key_id=key_id,
            occurred_at=moment.astimezone(self._rng.choice(ZONES)),
            cost_chf=f"{cost:.9f}",
            units=self._rng.randrange(1000),
            endpoint="/v1/chat/completions",
            model="m",
        )
        return self.keys[key_id], event

    async def _create(self, account: str) -> None:
        secret = apikey.generate()
        key_id = apikey.new_key_id()
        command = CreateKey(key_id, f"key {len(self.keys)}", apikey.digest(secret), apikey.last4(secret))
        if await self._execute(account, command):
            self.keys[key_id] = account

    async def _execute(self, account: str, command) -> bool:
        """Run a command as the API would; False when the rules refuse it (key limit, revoked key)."""
        try:
            await commands.execute(self._pool, account, command, METADATA)
        except DomainError:
            return False
        return True
