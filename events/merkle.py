"""The RFC 9162 Merkle tree over the log: roots, audit paths and consistency proofs.

Leaf i is `SHA-256(0x00 || h_i)`, h_i the chain hash of the log's i-th event (0-based, position
order); an inner node is `SHA-256(0x01 || left || right)`, and the tree of n leaves splits at the
largest power of two below n (RFC 9162 §2.1.1). Pure: whoever holds the hashes asks here which
subtrees a root or a proof needs (`range_subtrees`, `inclusion_plan`, `consistency_plan`), fetches
them, and assembles the answer with `range_hash`; auditors check proofs with `verify_inclusion` and
`verify_consistency`, which follow the RFC's verification algorithms step by step.

Every range a root or a proof needs is a run of perfect subtrees aligned to their size, named
(level, index): the 2**level leaves from index * 2**level on.
"""

import hashlib
from collections.abc import Mapping, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = tuple[int, int]  # (level, index)


def leaf_hash(chain_hash: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + chain_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than size (size ≥ 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def range_subtrees(start: int, end: int) -> list[Subtree]:
    """The perfect subtrees, left to right, whose fold is MTH(D[start:end]).

    Valid for every range the RFC's recursion visits: start is a multiple of the largest power of two
    not above end - start."""
    subtrees, at = [], start
    while at < end:
        level = (end - at).bit_length() - 1
        subtrees.append((level, at >> level))
        at += 1 << level
    return subtrees


def range_hash(subtrees: Sequence[Subtree], hashes: Mapping[Subtree, bytes]) -> bytes:
    """MTH of a range from the hashes of its perfect subtrees: the right-most ones join first."""
    *left, last = subtrees
    result = hashes[last]
    for subtree in reversed(left):
        result = node_hash(hashes[subtree], result)
    return result


Range = tuple[int, int]  # [start, end) of leaves


def inclusion_plan(index: int, size: int) -> list[Range]:
    """The ranges whose roots form the audit path of leaf `index` in the tree of `size` leaves
    (RFC 9162 §2.1.3.1), nearest the leaf first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    path, start, end = [], 0, size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            path.append((middle, end))
            end = middle
        else:
            path.append((start, middle))
            start = middle
    return path[::-1]


def consistency_plan(first: int, second: int) -> list[Range]:
    """The ranges whose roots form the consistency proof from the tree of `first` leaves to that of
    `second` leaves (RFC 9162 §2.1.4.1, SUBPROOF), in the RFC's order."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from {first} to {second} leaves")
    proof, start, end, whole_old_tree = [], 0, second, True
    while first != end:
        middle = start + _split(end - start)
        if first <= middle:
            proof.append((middle, end))
            end = middle
        else:
            proof.append((start, middle))
            start, whole_old_tree = middle, False
    if not whole_old_tree:
        proof.append((start, end))
    return proof[::-1]


def subtrees_of(ranges: Sequence[Range]) -> set[Subtree]:
    """Every perfect subtree the ranges need: what a store fetches in one read."""
    return {subtree for start, end in ranges for subtree in range_subtrees(start, end)}


def assemble(ranges: Sequence[Range], hashes: Mapping[Subtree, bytes]) -> list[bytes]:
    return [range_hash(range_subtrees(start, end), hashes) for start, end in ranges]


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of leaf hashes held in memory (tests, small trees, the auditor's own recomputation)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    middle = _split(len(leaves))
    return node_hash(root(leaves[:middle]), root(leaves[middle:]))


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `path` prove leaf hash `leaf` is leaf `index` of the tree of `size`
    leaves whose root is `expected_root`?"""
    if index >= size or index < 0:
        return False
    fn, sn, result = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(p, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and result == expected_root


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: does `proof` show the tree of `second` leaves (root `second_root`) extends
    the tree of `first` leaves (root `first_root`)?"""
    if first > second or first < 1:
        return False
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the old root is the proof's first node
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root


class Frontier:
    """The right edge of a growing tree: the roots of its perfect subtrees, largest first, one per set
    bit of its size. Appending a leaf completes the subtrees it closes; the tree writer stores those at
    levels ≥ `keep_from` and keeps the frontier itself beside them, so it resumes where it stopped."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()):
        if len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of a tree of {size} leaves holds {size.bit_count()} hashes")
        self.size, self.hashes = size, list(hashes)

    def append(self, leaf: bytes, keep_from: int, completed: list[tuple[int, int, bytes]]) -> None:
        """Add a leaf hash; every perfect subtree it completes at level ≥ keep_from is added to
        `completed` as (level, index, hash)."""
        node, level, size = leaf, 0, self.size
        hashes = self.hashes
        while size & 1:
            node = node_hash(hashes.pop(), node)
            size >>= 1
            level += 1
            if level >= keep_from:
                completed.append((level, size, node))
        hashes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            result = node_hash(left, result)
        return result
