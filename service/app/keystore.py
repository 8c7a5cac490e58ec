"""The key cache's store: every active key in a few flat arrays instead of a dict of objects.

A dict of per-key objects took about 280 bytes a key (docs/benchmarks.md); here a key takes about 65:
a 53-byte record (SHA-256 digest, key id as a number, account number) in one bytearray, a 4-byte slot
in an open-addressing index of record numbers (linear probing, at most 85% full), and its share of
its account, whose id is stored once. Expiry instants, spend limits and a key id that is not of the
form `new_key_id` makes live in dicts holding only the keys that have one. Every change is O(1)
amortised: a removal moves the last record into the hole. A lookup probes in Python, so the entries
verification asked for recently are kept as objects (`MEMO_SIZE`); a change of a key forgets its own.
"""

import struct
from array import array
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from events.apikey import ALPHABET

RECORD = struct.Struct("<32s17sI")  # digest, key id (key_ + 22 base62 digits, as a number), account
_PREFIX = struct.Struct("<Q")  # the first 8 bytes of a digest: where its probe starts
MEMO_SIZE = 4096
_MIN_SLOTS = 1024
_ID_DIGITS = 22
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # two base62 digits at a time: half the steps
_PAIR_VALUES = {pair: value for value, pair in enumerate(_PAIRS)}
_NO_ID = bytes(17)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_id: str
    account_id: str
    expires_at: float | None = None  # POSIX time; no event marks the instant, verify compares it
    limit: Decimal | None = None  # monthly spend limit in CHF

    @classmethod
    def of(cls, row: asyncpg.Record) -> "KeyEntry":
        expires_at = row["expires_at"]
        return cls(
            row["key_id"],
            row["account_id"],
            None if expires_at is None else expires_at.timestamp(),
            row["monthly_spend_limit_chf"],
        )

    def expired(self, now: float) -> bool:
        """The instant is the one the command set, by the clock of the process that ran it."""
        return self.expires_at is not None and self.expires_at <= now


def packed_key_id(key_id: str) -> bytes | None:
    """17 bytes for `key_` + 22 base62 digits (what new_key_id makes), None for any other id."""
    if len(key_id) != 4 + _ID_DIGITS or not key_id.startswith("key_"):
        return None
    value = 0
    try:
        for at in range(4, 4 + _ID_DIGITS, 2):
            value = value * 3844 + _PAIR_VALUES[key_id[at : at + 2]]
    except KeyError:
        return None
    return value.to_bytes(17, "big")


def unpacked_key_id(packed: bytes) -> str:
    value, pairs = int.from_bytes(packed, "big"), []
    for _ in range(_ID_DIGITS // 2):
        value, pair = divmod(value, 3844)
        pairs.append(_PAIRS[pair])
    return "key_" + "".join(reversed(pairs))


class Interned:
    """Strings stored once each in one bytearray, each named by a number, found by an open-addressing
    index on their hash. A string stays until the store is replaced (a reload): accounts come back."""

    def __init__(self):
        self._text = bytearray()
        self._starts = array("I", [0])  # string n is _text[_starts[n]:_starts[n + 1]]
        self._index = array("I", [0]) * 64  # string number + 1, or 0 for an empty slot

    def __len__(self) -> int:
        return len(self._starts) - 1

    def text(self, number: int) -> str:
        return self._text[self._starts[number] : self._starts[number + 1]].decode()

    def number(self, text: str) -> int:
        """The number of this string, stored now if it is new."""
        encoded, index, starts = text.encode(), self._index, self._starts
        mask = len(index) - 1
        slot = hash(text) & mask
        while found := index[slot]:
            start = starts[found - 1]
            if starts[found] - start == len(encoded) and self._text.startswith(encoded, start):
                return found - 1
            slot = (slot + 1) & mask
        number = len(self)
        self._text += encoded
        starts.append(len(self._text))
        index[slot] = number + 1
        if len(self) * 4 > len(index) * 3:
            self._rebuild(len(index) * 2)
        return number

    def _rebuild(self, slots: int) -> None:
        index, mask = array("I", [0]) * slots, slots - 1
        for number in range(len(self)):
            slot = hash(self.text(number)) & mask
            while index[slot]:
                slot = (slot + 1) & mask
            index[slot] = number + 1
        self._index = index


class KeyStore:
    """Active keys by SHA-256 digest."""

    def __init__(self):
        self._records = bytearray()  # RECORD.size bytes per key, in no order
        self._index = array("I", [0]) * _MIN_SLOTS  # record number + 1, or 0 for an empty slot
        self._accounts = Interned()
        self._expires: dict[bytes, float] = {}  # digest -> POSIX time, for the keys with an expiry
        self._limits: dict[bytes, Decimal] = {}  # digest -> monthly spend limit, for the keys with one
        self._odd_ids: dict[bytes, str] = {}  # digest -> key id, for ids that do not pack
        self._memo: dict[bytes, KeyEntry] = {}

    def __len__(self) -> int:
        return len(self._records) // RECORD.size

    def get(self, digest: bytes) -> KeyEntry | None:
        entry = self._memo.get(digest)
        if entry is None:
            _, number = self._probe(digest)
            if number < 0:
                return None
            entry = self._entry(digest, number)
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[digest] = entry
        return entry

    def put(
        self,
        digest: bytes,
        key_id: str,
        account_id: str,
        expires_at: float | None = None,
        limit: Decimal | None = None,
    ) -> None:
        """Add the key, or replace what is held for its digest."""
        self._memo.pop(digest, None)
        packed = packed_key_id(key_id)
        if packed is None:
            self._odd_ids[digest], packed = key_id, _NO_ID
        else:
            self._odd_ids.pop(digest, None)
        record = RECORD.pack(digest, packed, self._accounts.number(account_id))
        _set_or_pop(self._expires, digest, expires_at)
        _set_or_pop(self._limits, digest, limit)
        slot, number = self._probe(digest)
        if number >= 0:
            self._records[number * RECORD.size : (number + 1) * RECORD.size] = record
            return
        self._index[slot] = len(self) + 1
        self._records += record
        if len(self) * 20 > len(self._index) * 17:  # over 85% full: 60% after
            self._rebuild(len(self) * 5 // 3)

    def remove(self, digest: bytes) -> None:
        """Forget the key, if it is held."""
        slot, number = self._probe(digest)
        if number < 0:
            return
        self._memo.pop(digest, None)
        for sparse in (self._expires, self._limits, self._odd_ids):
            sparse.pop(digest, None)
        self._unlink(slot)
        size, last = RECORD.size, len(self) - 1
        if number != last:  # the last record fills the hole, so the records stay dense
            moved = self._records[last * size :]
            self._records[number * size : (number + 1) * size] = moved
            moved_slot, _ = self._probe(bytes(moved[:32]))  # finds the slot of `last`
            self._index[moved_slot] = number + 1
        del self._records[last * size :]

    def _entry(self, digest: bytes, number: int) -> KeyEntry:
        _, packed, account = RECORD.unpack_from(self._records, number * RECORD.size)
        key_id = self._odd_ids.get(digest) if packed == _NO_ID else None
        return KeyEntry(
            key_id or unpacked_key_id(packed),
            self._accounts.text(account),
            self._expires.get(digest),
            self._limits.get(digest),
        )

    def _home(self, digest: bytes | bytearray, offset: int = 0) -> int:
        return _PREFIX.unpack_from(digest, offset)[0] * len(self._index) >> 64

    def _probe(self, digest: bytes) -> tuple[int, int]:
        """(slot, record number) of the digest, or (the empty slot that ends its probe, -1)."""
        index, records, size = self._index, self._records, RECORD.size
        slots = len(index)
        slot = _PREFIX.unpack_from(digest)[0] * slots >> 64
        while found := index[slot]:
            if records.startswith(digest, (found - 1) * size):
                return slot, found - 1
            slot = slot + 1 if slot + 1 < slots else 0
        return slot, -1

    def _unlink(self, hole: int) -> None:
        """Empty a slot of the index, moving back the entries after it whose probe passed it."""
        index, slots, size, at = self._index, len(self._index), RECORD.size, hole
        while True:
            at = at + 1 if at + 1 < slots else 0
            if not (found := index[at]):
                break
            home = self._home(self._records, (found - 1) * size)
            if (at - home) % slots >= (at - hole) % slots:  # `hole` lies on its way from home
                index[hole], hole = found, at
        index[hole] = 0

    def _rebuild(self, slots: int) -> None:
        self._index = index = array("I", [0]) * max(slots, _MIN_SLOTS)
        records, size = self._records, RECORD.size
        for number in range(len(self)):
            slot = self._home(records, number * size)
            while index[slot]:
                slot = slot + 1 if slot + 1 < len(index) else 0
            index[slot] = number + 1


def _set_or_pop(sparse: dict, digest: bytes, value) -> None:
    if value is None:
        sparse.pop(digest, None)
    else:
        sparse[digest] = value
