"""The stored Merkle tree over the log (sql/009_merkle_tree.sql) and its signed checkpoints.

Leaf i is the i-th event in position order, its hash `merkle.leaf_hash(events.hash)`. The one tree
writer per database (service/app/checkpoints.py) folds events in with `build`: it stores every perfect
subtree of 2**STORED_FROM leaves or more, records the runs of positions the log skipped (`log_gaps`), and
moves its state row, all in the caller's transaction. Reads never need a transaction: what is
stored never changes, and a read names its tree size. A root or proof fetches the stored subtrees it
needs in one query and computes the smaller ones from the events' hashes (at most 2**STORED_FROM
leaves per node, one range scan by position each), so it costs O(log n) whatever the log's size.

An event recorded before the hash chain existed (migration 004) has no hash: its leaf is
`merkle.leaf_hash(b"")`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from events import merkle
from events.merkle import Range, Subtree

STORED_FROM = 6  # the lowest stored level: subtrees of 64 leaves


@dataclass(frozen=True)
class TreeState:
    size: int
    last_position: int
    frontier: list[bytes]


async def state(connection: asyncpg.Connection, for_update: bool = False) -> TreeState:
    row = await connection.fetchrow(
        "SELECT tree_size, last_position, frontier FROM merkle_tree_state"
        + (" FOR UPDATE" if for_update else "")
    )
    return TreeState(row["tree_size"], row["last_position"], list(row["frontier"]))


async def tree_size(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT tree_size FROM merkle_tree_state")


async def build(connection: asyncpg.Connection, batch_size: int) -> int:
    """Fold up to batch_size events after the writer's state into the tree; the leaves added. Runs in
    the caller's transaction, which holds the state row until it commits."""
    if not connection.is_in_transaction():
        raise RuntimeError("build must run inside a transaction")
    current = await state(connection, for_update=True)
    rows = await connection.fetch(
        "SELECT position, hash FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        current.last_position,
        batch_size,
    )
    if not rows:
        return 0
    frontier = merkle.Frontier(current.size, current.frontier)
    completed: list[tuple[int, int, bytes]] = []
    runs: list[tuple[int, int]] = []  # (first leaf after a run of skipped positions, skipped before it)
    expected = current.last_position + 1
    leaf_hash, append = merkle.leaf_hash, frontier.append
    for position, chain_hash in rows:
        if position != expected:  # positions drawn by appends that rolled back: never visible
            runs.append((frontier.size, position - 1 - frontier.size))
        expected = position + 1
        append(leaf_hash(chain_hash or b""), STORED_FROM, completed)
    if completed:
        await connection.execute(
            """INSERT INTO merkle_subtrees (level, index, hash)
               SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])""",
            *zip(*completed, strict=True),
        )
    if runs:
        await connection.execute(
            "INSERT INTO log_gaps (leaf, skipped) SELECT * FROM unnest($1::bigint[], $2::bigint[])",
            *zip(*runs, strict=True),
        )
    await connection.execute(
        "UPDATE merkle_tree_state SET tree_size = $1, last_position = $2, frontier = $3",
        frontier.size,
        rows[-1]["position"],
        frontier.hashes,
    )
    return len(rows)


# From leaf `leaf` of a log_gaps row on, an event's position is its leaf index + 1 + skipped; the
# runs are few (one per rolled-back append), and each lookup below is one index probe.
_SKIPPED_BEFORE_LEAF = "SELECT skipped FROM log_gaps WHERE leaf <= {leaf} ORDER BY leaf DESC LIMIT 1"
_SKIPPED_BEFORE_POSITION = """SELECT skipped FROM log_gaps WHERE leaf + 1 + skipped <= {position}
                              ORDER BY leaf + 1 + skipped DESC LIMIT 1"""


async def leaf_indexes(connection: asyncpg.Connection, positions: Sequence[int]) -> list[int | None]:
    """Each event's leaf index, in the order given; None for a position the tree does not hold yet
    (the writer has not reached it, so the positions skipped before it are not known)."""
    rows = await connection.fetch(
        f"""SELECT p - 1 - coalesce(({_SKIPPED_BEFORE_POSITION.format(position="p")}), 0), p <= state.last
            FROM unnest($1::bigint[]) WITH ORDINALITY AS given(p, n),
                 (SELECT last_position AS last FROM merkle_tree_state) AS state
            ORDER BY n""",
        positions,
    )
    return [leaf if held else None for leaf, held in rows]


_LEAF_RUNS = f"""
    SELECT run.n, e.hash
    FROM unnest($1::bigint[], $2::int[]) WITH ORDINALITY AS run(leaf, count, n)
    CROSS JOIN LATERAL (
        SELECT position, hash FROM events
        WHERE position >= run.leaf + 1 + coalesce(({_SKIPPED_BEFORE_LEAF.format(leaf="run.leaf")}), 0)
        ORDER BY position LIMIT run.count
    ) AS e
    ORDER BY run.n, e.position"""


async def subtree_hashes(connection: asyncpg.Connection, needed: set[Subtree]) -> dict[Subtree, bytes]:
    """The hashes of the perfect subtrees named: stored ones in one query, the others from the events
    of the 64-leaf blocks they lie in (one range scan each, all in one query)."""
    stored = [subtree for subtree in needed if subtree[0] >= STORED_FROM]
    found: dict[Subtree, bytes] = {}
    if stored:
        levels, indexes = zip(*stored, strict=True)
        rows = await connection.fetch(
            """SELECT level, index, hash FROM merkle_subtrees
               WHERE (level, index) IN (SELECT * FROM unnest($1::smallint[], $2::bigint[]))""",
            levels,
            indexes,
        )
        found = {(row["level"], row["index"]): row["hash"] for row in rows}
        if len(found) != len(stored):
            raise LookupError("the tree is not built that far")
    low = [subtree for subtree in needed if subtree[0] < STORED_FROM]
    if low:
        found.update(await _low_subtrees(connection, low))
    return found


async def _low_subtrees(connection, low: list[Subtree]) -> dict[Subtree, bytes]:
    runs: dict[int, list[int]] = {}  # block -> [first leaf, end leaf) needed in it
    for level, index in low:
        start = index << level
        run = runs.setdefault(start >> STORED_FROM, [start, start + (1 << level)])
        run[0], run[1] = min(run[0], start), max(run[1], start + (1 << level))
    blocks = sorted(runs.values())
    rows = await connection.fetch(
        _LEAF_RUNS,
        [start for start, _ in blocks],
        [end - start for start, end in blocks],
    )
    leaves: dict[int, bytes] = {}
    counters = dict.fromkeys(range(1, len(blocks) + 1), 0)
    for n, chain_hash in rows:
        leaves[blocks[n - 1][0] + counters[n]] = merkle.leaf_hash(chain_hash or b"")
        counters[n] += 1
    if any(counters[n] != end - start for n, (start, end) in enumerate(blocks, start=1)):
        raise LookupError("the log holds fewer events than the tree")
    return {
        (level, index): merkle.root([leaves[i] for i in range(index << level, (index + 1) << level)])
        for level, index in low
    }


async def range_roots(connection: asyncpg.Connection, ranges: Sequence[Range]) -> list[bytes]:
    """MTH of each range of leaves (any ranges RFC 9162's recursion visits)."""
    if not ranges:
        return []
    return merkle.assemble(ranges, await subtree_hashes(connection, merkle.subtrees_of(ranges)))


async def root(connection: asyncpg.Connection, size: int) -> bytes:
    if size == 0:
        return merkle.EMPTY_ROOT
    return (await range_roots(connection, [(0, size)]))[0]


@dataclass(frozen=True)
class Inclusion:
    leaf_hash: bytes
    position: int
    hashes: list[bytes]


async def inclusion(connection: asyncpg.Connection, index: int, size: int) -> Inclusion:
    """Leaf `index`'s hash, its event's position and its audit path in the tree of `size` leaves."""
    plan = merkle.inclusion_plan(index, size)
    hashes = await subtree_hashes(connection, merkle.subtrees_of(plan) | {(0, index)})
    position = await connection.fetchval(
        f"SELECT $1::bigint + 1 + coalesce(({_SKIPPED_BEFORE_LEAF.format(leaf='$1')}), 0)", index
    )
    return Inclusion(hashes[(0, index)], position, merkle.assemble(plan, hashes))


async def consistency(connection: asyncpg.Connection, first: int, second: int) -> list[bytes]:
    if first == second:
        return []
    return await range_roots(connection, merkle.consistency_plan(first, second))


# Checkpoints


async def add_checkpoint(connection: asyncpg.Connection, size: int, root_hash: bytes, note: str) -> None:
    """Keep a signed checkpoint; one of that size kept already stays (it names the same root)."""
    await connection.execute(
        "INSERT INTO checkpoints (tree_size, root, note) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        size,
        root_hash,
        note,
    )


async def checkpoint(connection: asyncpg.Connection, size: int | None = None) -> asyncpg.Record | None:
    """The kept checkpoint of that size, or the newest; None when there is none."""
    if size is None:
        return await connection.fetchrow(
            "SELECT tree_size, root, note, made_at FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
        )
    return await connection.fetchrow(
        "SELECT tree_size, root, note, made_at FROM checkpoints WHERE tree_size = $1", size
    )
