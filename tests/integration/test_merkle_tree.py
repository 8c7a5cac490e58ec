"""The stored Merkle tree (service/store/tree.py) on a real log: every root and proof it gives for
every size and leaf equals a naive in-memory RFC 9162 tree over the events' hashes, across gaps in
positions and batch boundaries, and verifies with events/merkle.py's RFC algorithms."""

import hashlib
import random

import pytest

from events import merkle
from service.store import db, tree


async def add_events(admin, count: int, skip_every: int = 0) -> None:
    """Events with random chain hashes; with skip_every, a position drawn and never used (as a
    rolled-back append leaves) before every skip_every-th event."""
    for n in range(count):
        if skip_every and n % skip_every == skip_every - 1:
            await admin.execute("SELECT nextval('events_position_seq')")
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               VALUES ('usage-key_t', 'acct_t', 'UsageRecorded', '{}', $1)""",
            random.randbytes(32),
        )


async def chain_hashes(admin) -> list[bytes]:
    return [row[0] for row in await admin.fetch("SELECT hash FROM events ORDER BY position")]


@pytest.fixture
async def service(database_url):
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


async def build_all(connection, batch_size: int) -> None:
    while True:
        async with connection.transaction():
            if await tree.build(connection, batch_size) < batch_size:
                return


async def test_roots_and_proofs_equal_a_naive_tree_for_every_size_and_leaf(admin, service):
    await add_events(admin, 150, skip_every=37)
    await build_all(service, batch_size=23)  # batch ends fall anywhere, gaps inside batches too
    leaves = [merkle.leaf_hash(h) for h in await chain_hashes(admin)]
    assert await tree.tree_size(service) == len(leaves) == 150
    assert await admin.fetchval("SELECT count(*) FROM log_gaps") == 4  # skipped at 37, 74, 111, 148
    positions = [row[0] for row in await admin.fetch("SELECT position FROM events ORDER BY position")]
    assert await tree.leaf_indexes(service, positions) == list(range(150))
    assert await tree.leaf_indexes(service, positions[::-1]) == list(range(149, -1, -1))
    roots = {n: merkle.root(leaves[:n]) for n in range(0, len(leaves) + 1)}
    for n in (0, 1, 2, 63, 64, 65, 127, 128, 129, 150):
        assert await tree.root(service, n) == roots[n]
    for n in range(1, len(leaves) + 1, 7):
        for i in range(n):
            proof = await tree.inclusion(service, i, n)
            assert proof.leaf_hash == leaves[i] and proof.position == positions[i]
            assert merkle.verify_inclusion(leaves[i], i, n, proof.hashes, roots[n])
        for m in range(1, n + 1):
            hashes = await tree.consistency(service, m, n)
            assert merkle.verify_consistency(m, n, hashes, roots[m], roots[n]), (m, n)


async def test_the_tree_grows_with_the_log_and_matches_a_rebuild(admin, service):
    await add_events(admin, 70)
    await build_all(service, batch_size=1000)
    await add_events(admin, 200, skip_every=50)
    await build_all(service, batch_size=64)
    grown = await admin.fetch("SELECT level, index, hash FROM merkle_subtrees ORDER BY level, index")
    state = await tree.state(service)
    leaves = [merkle.leaf_hash(h) for h in await chain_hashes(admin)]
    assert state.size == 270 and merkle.Frontier(state.size, state.frontier).root() == merkle.root(leaves)
    await admin.execute("TRUNCATE merkle_subtrees, log_gaps")
    await admin.execute("UPDATE merkle_tree_state SET tree_size = 0, last_position = 0, frontier = '{}'")
    await build_all(service, batch_size=100_000)
    assert await admin.fetch("SELECT level, index, hash FROM merkle_subtrees ORDER BY level, index") == grown
    assert await tree.state(service) == state


async def test_an_unchained_event_is_a_leaf_of_the_empty_hash(admin, service):
    await admin.execute(
        "INSERT INTO events (stream_id, account_id, type, data) VALUES ('s', 'acct_t', 'UsageRecorded', '{}')"
    )
    await build_all(service, 10)
    assert await tree.root(service, 1) == hashlib.sha256(b"\x00").digest()


async def test_the_service_role_cannot_rewrite_the_tree_or_its_checkpoints(service):
    for statement in (
        "DELETE FROM merkle_subtrees",
        "UPDATE checkpoints SET note = ''",
        "DELETE FROM log_gaps",
    ):
        with pytest.raises(Exception, match="permission denied"):
            await service.execute(statement)


async def test_leaf_indexes_skip_runs_of_many_positions_and_wait_for_the_tree(admin, service):
    await add_events(admin, 3)
    await admin.execute("SELECT setval('events_position_seq', nextval('events_position_seq') + 1000)")
    await add_events(admin, 2)
    await build_all(service, batch_size=10)
    await add_events(admin, 1)  # not in the tree yet
    positions = [row[0] for row in await admin.fetch("SELECT position FROM events ORDER BY position")]
    assert positions[3] - positions[2] == 1002
    assert await tree.leaf_indexes(service, positions) == [0, 1, 2, 3, 4, None]
    assert [(await tree.inclusion(service, leaf, 5)).position for leaf in range(5)] == positions[:5]
