"""Issue 14, "Must hold": proofs verify for samples of a 1,000,000-event log. The stored tree
(service/store/tree.py) of a real log of a million events with runs of skipped positions gives, for
sampled leaves and sizes, exactly the roots and proofs RFC 9162 §2.1 defines; those are computed here
from the RFC's recursive definitions over leaf ranges (memoised, so that a million leaves take
seconds), from hashes derived in Python, not read back from the database."""

import functools
import hashlib
import random

import pytest

from events import merkle
from service.store import db, tree

EVENTS = 1_000_000
CHUNKS = (400_000, 350_000, 250_000)  # appended with skipped positions between them


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@functools.cache
def leaves() -> list[bytes]:
    return [sha(b"\x00" + sha(str(n).encode())) for n in range(1, EVENTS + 1)]


def split(n: int) -> int:
    """RFC 9162: the largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def _mth_cached(lo: int, hi: int) -> bytes:
    k = split(hi - lo)
    return sha(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]); ranges of 64 leaves and more are remembered."""
    if hi - lo == 1:
        return leaves()[lo]
    if hi - lo >= 64:
        return _mth_cached(lo, hi)
    k = split(hi - lo)
    return sha(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi])"""
    if hi - lo == 1:
        return []
    k = split(hi - lo)
    if m < k:
        return [*path(m, lo, lo + k), mth(lo + k, hi)]
    return [*path(m - k, lo + k, hi), mth(lo, lo + k)]


def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b)"""
    if m == hi - lo:
        return [] if b else [mth(lo, hi)]
    k = split(hi - lo)
    if m <= k:
        return [*subproof(m, lo, lo + k, b), mth(lo + k, hi)]
    return [*subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]


@pytest.fixture
async def million(admin, database_url):
    """A log of EVENTS events whose chain hashes are SHA-256 of 1, 2, … in decimal, with one run of
    a single skipped position and one of 10,000 between the chunks; its tree built in the writer's
    batches."""
    first = 1
    for n, count in enumerate(CHUNKS):
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               SELECT 'usage-key_m', 'acct_m', 'UsageRecorded', '{}', sha256(n::text::bytea)
               FROM generate_series($1::bigint, $2::bigint) AS n""",
            first,
            first + count - 1,
        )
        first += count
        if n == 0:
            await admin.execute("SELECT nextval('events_position_seq')")
        if n == 1:
            await admin.execute("SELECT setval('events_position_seq', nextval('events_position_seq') + 9999)")
    connection = await db.connect(database_url)
    while True:
        async with connection.transaction():
            if await tree.build(connection, 50_000) < 50_000:
                break
    yield connection
    await connection.close()


async def test_sampled_roots_and_proofs_of_a_million_events_are_rfc_9162s(million, admin):
    assert await tree.tree_size(million) == EVENTS
    assert await admin.fetchval("SELECT count(*) FROM log_gaps") == 2
    rng = random.Random(1_000_000)
    sizes = sorted({1, 63, 64, 65, 399_999, 400_000, 400_001, 524_288, 524_289, 750_001, EVENTS - 1, EVENTS}
                   | {rng.randint(2, EVENTS) for _ in range(6)})  # fmt: skip
    for size in sizes:
        assert await tree.root(million, size) == mth(0, size), size
    edges = [0, 399_999, 400_000, 749_999, 750_000, EVENTS - 1]  # around the skipped positions
    for size in sizes:
        for index in [i for i in edges if i < size] + [rng.randrange(size) for _ in range(8)]:
            proof = await tree.inclusion(million, index, size)
            assert proof.leaf_hash == leaves()[index]
            assert proof.hashes == path(index, 0, size), (index, size)
            assert merkle.verify_inclusion(proof.leaf_hash, index, size, proof.hashes, mth(0, size))
    for first, second in [(a, b) for a in sizes for b in sizes if a <= b][::3]:
        hashes = await tree.consistency(million, first, second)
        assert hashes == ([] if first == second else subproof(first, 0, second, True)), (first, second)
        assert merkle.verify_consistency(first, second, hashes, mth(0, first), mth(0, second))
    positions = [row[0] for row in await admin.fetch(
        "SELECT position FROM events WHERE position IN (1, 400000, 400001, 400002, 750001, 760001, 760002)"
    )]  # fmt: skip
    assert positions == [1, 400000, 400002, 750001, 760002]  # 400001 and 750002..760001 were skipped
    assert await tree.leaf_indexes(million, positions) == [0, 399_999, 400_000, 749_999, 750_000]
    assert [(await tree.inclusion(million, leaf, EVENTS)).position for leaf in (400_000, 750_000)] == [
        400_002,
        760_002,
    ]
