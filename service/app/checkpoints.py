"""The Merkle tree's one writer per database and the signed checkpoints it makes.

Every service process runs a TreeWriter; an advisory lock of its own (TREE_LOCK) elects the one that
writes, as PROJECTOR_LOCK does for the projector. A lock of its own rather than the projector's loop:
the tree and the usage projections then never wait for each other (usage shows in stats within 1 s
whatever a tree batch costs), and either can fail and restart alone. The writer catches up from its
state row on start, is woken by the appends' NOTIFY channels, and folds each batch in one transaction
with the state row, so a crash repeats and skips nothing. While the tree grows it signs a checkpoint
of it at least every `interval` seconds, in the same transaction as the batch it covers.
"""

import asyncio
import logging

import asyncpg

from events.log import LIFECYCLE_CHANNEL, TREE_LOCK, USAGE_CHANNEL
from events.note import Checkpoint, Signer
from projections.leadership import Leadership, Step
from service.app.errors import TreeBehind
from service.store import tree

log = logging.getLogger(__name__)
DEFAULT_ORIGIN = "keyledger.local/log"


async def make_checkpoint(connection: asyncpg.Connection, signer: Signer, origin: str, size: int) -> str:
    """The signed checkpoint of the tree of `size` leaves (kept; one kept already is answered)."""
    root = await tree.root(connection, size)
    await tree.add_checkpoint(connection, size, root, signer.sign(Checkpoint(origin, size, root).text()))
    return (await tree.checkpoint(connection, size))["note"]


async def covering_checkpoint(connection: asyncpg.Connection, signer: Signer, origin: str, size: int):
    """A kept checkpoint of a tree of `size` leaves or more: the newest, or one made now."""
    newest = await tree.checkpoint(connection)
    if newest is not None and newest["tree_size"] >= size:
        return newest["tree_size"], newest["note"]
    current = await tree.tree_size(connection)
    return current, await make_checkpoint(connection, signer, origin, current)


class TreeWriter:
    """Runs on one dedicated connection (the shell reconnects it): waits for TREE_LOCK, then builds
    until the connection fails."""

    def __init__(
        self,
        signer: Signer,
        origin: str = DEFAULT_ORIGIN,
        interval: float = 10.0,
        batch_size: int = 50_000,
        idle_poll: float = 0.5,
        gather: float = 0.1,
    ):
        self._signer, self._origin, self._interval = signer, origin, interval
        self._batch_size, self._idle_poll, self._gather = batch_size, idle_poll, gather
        self._leadership = Leadership(TREE_LOCK, [USAGE_CHANNEL, LIFECYCLE_CHANNEL])

    @property
    def is_leader(self) -> bool:
        return self._leadership.is_leader

    async def lead(self, connection: asyncpg.Connection) -> None:
        await self._leadership.lead(connection, self._begin)

    async def _begin(self, connection: asyncpg.Connection) -> Step:
        log.info(
            "this process now writes the Merkle tree; checkpoints verify with %s",
            self._signer.verifier.text(),
        )
        loop = asyncio.get_running_loop()
        newest = await tree.checkpoint(connection)
        signed_size = None if newest is None else newest["tree_size"]
        signed_at = float("-inf")

        async def build(connection: asyncpg.Connection) -> float:
            nonlocal signed_size, signed_at
            async with connection.transaction():
                added = await tree.build(connection, self._batch_size)
                size = await tree.tree_size(connection)
                if size != signed_size and loop.time() - signed_at >= self._interval:
                    await make_checkpoint(connection, self._signer, self._origin, size)
                    signed_size, signed_at = size, loop.time()
            if added == self._batch_size:
                return 0
            if added:
                # Appends commit one at a time, each with a notification: gathering those of the next
                # moment into one batch costs the tree `gather` seconds and saves a transaction each.
                await asyncio.sleep(self._gather)
            if size != signed_size:  # a checkpoint is due: wake when it is, not up to a poll later
                return min(self._idle_poll, max(0.0, signed_at + self._interval - loop.time()))
            return self._idle_poll

        return build


async def wait_for_tree(connection: asyncpg.Connection, position: int, within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (await tree.state(connection)).last_position < position:
        if loop.time() > deadline:
            raise TreeBehind(f"the Merkle tree does not reach position {position} yet")
        await asyncio.sleep(0.05)


async def log_reaches(connection: asyncpg.Connection, size: int) -> bool:
    """Whether the log holds `size` events; if the tree lags behind them, wait until it holds them too
    (TreeBehind after a few seconds)."""
    current = await tree.state(connection)
    if size <= current.size:
        return True
    behind = await connection.fetchval(
        "SELECT count(*) FROM (SELECT FROM events WHERE position > $1 LIMIT $2) AS newer",
        current.last_position,
        size - current.size,
    )
    if current.size + behind < size:
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while await tree.tree_size(connection) < size:
        if loop.time() > deadline:
            raise TreeBehind(f"the Merkle tree does not hold {size} events yet")
        await asyncio.sleep(0.05)
    return True


async def inclusion_of(
    connection: asyncpg.Connection, signer: Signer, origin: str, positions: list[int]
) -> tuple[int, str, dict[int, tuple[int, bytes, list[bytes]]]]:
    """One signed checkpoint covering every event named, and for each position its leaf index, its
    chain hash and its audit path in that checkpoint's tree: (tree size, note, {position: ...})."""
    if not positions:
        newest = await covering_checkpoint(connection, signer, origin, 0)
        return newest[0], newest[1], {}
    await wait_for_tree(connection, max(positions))
    leaves = dict(zip(positions, await tree.leaf_indexes(connection, positions), strict=True))
    size, note = await covering_checkpoint(connection, signer, origin, max(leaves.values()) + 1)
    chain_hashes = dict(
        await connection.fetch(
            "SELECT position, hash FROM events WHERE position = ANY($1::bigint[])", positions
        )
    )
    proofs = {}
    for position, leaf in leaves.items():
        proof = await tree.inclusion(connection, leaf, size)
        proofs[position] = (leaf, chain_hashes[position] or b"", proof.hashes)
    return size, note, proofs
