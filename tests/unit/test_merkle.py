"""events/merkle.py against the RFC 9162 text, written again here as plainly as the RFC states it
(MTH, PATH and SUBPROOF as recursive definitions over a list of leaves), and against pymerkle, a
Merkle tree library we did not write."""

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree
from pymerkle import verify_inclusion as pymerkle_verify_inclusion

from events import merkle


def chain_hash(i: int) -> bytes:
    return hashlib.sha256(b"event %d" % i).digest()


def leaves(size: int) -> list[bytes]:
    return [merkle.leaf_hash(chain_hash(i)) for i in range(size)]


# RFC 9162 §2.1, word for word
def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return sha(b"")
    if n == 1:
        return d[0]  # the leaves passed here are already leaf hashes: SHA-256(0x00 || d(0))
    k = 1
    while k * 2 < n:
        k *= 2
    return sha(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


# How a store answers: fetch the perfect subtrees a plan names, then assemble.
def subtree_hashes(d: list[bytes], wanted: set[merkle.Subtree]) -> dict[merkle.Subtree, bytes]:
    return {(level, index): mth(d[index << level : (index + 1) << level]) for level, index in wanted}


def inclusion_proof(d: list[bytes], index: int, size: int) -> list[bytes]:
    ranges = merkle.inclusion_plan(index, size)
    return merkle.assemble(ranges, subtree_hashes(d, merkle.subtrees_of(ranges)))


def consistency_proof(d: list[bytes], first: int, second: int) -> list[bytes]:
    ranges = merkle.consistency_plan(first, second)
    return merkle.assemble(ranges, subtree_hashes(d, merkle.subtrees_of(ranges)))


def stored_root(d: list[bytes], size: int) -> bytes:
    subtrees = merkle.range_subtrees(0, size)
    return merkle.range_hash(subtrees, subtree_hashes(d, set(subtrees)))


def test_the_empty_tree_has_the_hash_of_the_empty_string():
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


def test_a_leaf_and_a_node_are_hashed_with_their_rfc_prefixes():
    h = chain_hash(0)
    assert merkle.leaf_hash(h) == hashlib.sha256(b"\x00" + h).digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


@pytest.mark.parametrize("size", range(1, 130))
def test_every_proof_of_a_small_tree_is_the_rfcs_and_verifies(size):
    d = leaves(size)
    root = mth(d)
    assert merkle.root(d) == root == stored_root(d, size)
    for index in range(size):
        proof = inclusion_proof(d, index, size)
        assert proof == path(index, d)
        assert merkle.verify_inclusion(d[index], index, size, proof, root)
    for first in range(1, size + 1):
        proof = consistency_proof(d, first, size)
        assert proof == subproof(first, d, True)
        assert merkle.verify_consistency(first, size, proof, mth(d[:first]), root)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4000), st.data())
def test_proofs_of_random_trees_up_to_a_few_thousand_leaves(size, data):
    d = leaves(size)
    root = mth(d)
    index = data.draw(st.integers(0, size - 1))
    first = data.draw(st.integers(1, size))
    proof = inclusion_proof(d, index, size)
    assert proof == path(index, d)
    assert merkle.verify_inclusion(d[index], index, size, proof, root)
    proof = consistency_proof(d, first, size)
    assert proof == subproof(first, d, True)
    assert merkle.verify_consistency(first, size, proof, mth(d[:first]), root)


def test_a_plan_needs_logarithmically_many_subtrees():
    size = 1_000_003
    for index in (0, 1, 500_000, size - 1):
        assert len(merkle.subtrees_of(merkle.inclusion_plan(index, size))) <= 2 * size.bit_length()
    for first in (1, 3, 524_288, 999_999):
        assert len(merkle.subtrees_of(merkle.consistency_plan(first, size))) <= 2 * size.bit_length()


def flipped(proof: list[bytes], at: int) -> list[bytes]:
    damaged = bytearray(proof[at])
    damaged[0] ^= 1
    return [*proof[:at], bytes(damaged), *proof[at + 1 :]]


@pytest.mark.parametrize("size", [2, 3, 7, 8, 9, 100, 257])
def test_a_proof_that_does_not_hold_is_refused(size):
    d = leaves(size)
    root = mth(d)
    rng = random.Random(size)
    index = rng.randrange(size)
    proof = inclusion_proof(d, index, size)
    for at in range(len(proof)):
        assert not merkle.verify_inclusion(d[index], index, size, flipped(proof, at), root)
    assert not merkle.verify_inclusion(d[index], (index + 1) % size, size, proof, root)
    assert not merkle.verify_inclusion(d[index], index, size, proof[:-1], root)
    assert not merkle.verify_inclusion(d[index], index, size, [*proof, root], root)
    assert not merkle.verify_inclusion(d[index], size, size, proof, root)

    first = rng.randrange(1, size)
    proof = consistency_proof(d, first, size)
    old_root = mth(d[:first])
    for at in range(len(proof)):
        assert not merkle.verify_consistency(first, size, flipped(proof, at), old_root, root)
    assert not merkle.verify_consistency(first, size, proof[:-1], old_root, root)
    assert not merkle.verify_consistency(first, size, proof, root, root)
    assert not merkle.verify_consistency(first, size, [], old_root, root)
    changed = [*d[: first - 1], merkle.leaf_hash(b"changed"), *d[first:]]
    assert not merkle.verify_consistency(
        first, size, consistency_proof(changed, first, size), old_root, mth(changed)
    )


def test_equal_sizes_are_consistent_with_an_empty_proof_only():
    d = leaves(5)
    assert merkle.consistency_plan(5, 5) == []
    assert merkle.verify_consistency(5, 5, [], mth(d), mth(d))
    assert not merkle.verify_consistency(5, 5, [mth(d)], mth(d), mth(d))
    assert not merkle.verify_consistency(5, 5, [], mth(d), mth(d[:4]))


@pytest.mark.parametrize("index, size", [(-1, 3), (3, 3), (0, 0)])
def test_an_inclusion_plan_outside_the_tree_is_refused(index, size):
    with pytest.raises(ValueError, match="not in a tree"):
        merkle.inclusion_plan(index, size)


@pytest.mark.parametrize("first, second", [(0, 3), (4, 3), (-1, 2)])
def test_a_consistency_plan_between_impossible_sizes_is_refused(first, second):
    with pytest.raises(ValueError, match="no consistency proof"):
        merkle.consistency_plan(first, second)


def test_pymerkle_computes_the_same_root_for_every_size():
    tree = InmemoryTree(algorithm="sha256")  # RFC 9162 hashing: 0x00 leaf and 0x01 node prefixes
    d = []
    for i in range(300):
        tree.append_entry(chain_hash(i))
        d.append(merkle.leaf_hash(chain_hash(i)))
        size = i + 1
        assert tree.get_root(size) == merkle.root(d) == stored_root(d, size)
        # pymerkle proves leaf inclusion its own way; the root it checks against is ours
        index = (i * 7919) % size
        proof = tree.prove_inclusion(index + 1, size)  # pymerkle counts leaves from one
        pymerkle_verify_inclusion(d[index], merkle.root(d), proof)


def test_the_frontier_completes_every_perfect_subtree_once_and_knows_the_root():
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(300)]
    frontier, completed = merkle.Frontier(), []
    for n, leaf in enumerate(leaves, start=1):
        frontier.append(leaf, 2, completed)
        assert frontier.root() == merkle.root(leaves[:n])
    expected = [(level, index) for level in range(2, 9) for index in range(300 >> level)]
    assert sorted((level, index) for level, index, _ in completed) == expected
    for level, index, node in completed:
        assert node == merkle.root(leaves[index << level : (index + 1) << level])
    resumed = merkle.Frontier(frontier.size, frontier.hashes)
    assert resumed.root() == merkle.root(leaves)
