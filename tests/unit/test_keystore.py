"""The key cache's compact store answers as a dict from digest to entry would."""

import hashlib
from decimal import Decimal
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from events.apikey import new_key_id
from service.app import keystore
from service.app.keystore import Interned, KeyEntry, KeyStore, packed_key_id, unpacked_key_id


def digest(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def test_a_key_id_of_the_standard_form_packs_into_17_bytes_and_back():
    for key_id in [new_key_id() for _ in range(200)] + ["key_" + "0" * 22, "key_" + "z" * 22]:
        packed = packed_key_id(key_id)
        assert packed is not None and len(packed) == 17
        assert unpacked_key_id(packed) == key_id


def test_any_other_key_id_does_not_pack_and_is_held_as_it_is():
    odd = ["key_1", "key_" + "a" * 23, "key_" + "a" * 21 + "-", "kez_" + "a" * 22, "key_" + "é" * 22]
    assert [packed_key_id(key_id) for key_id in odd] == [None] * len(odd)
    store = KeyStore()
    for n, key_id in enumerate(odd):
        store.put(digest(n), key_id, "acct_1")
    assert [store.get(digest(n)).key_id for n in range(len(odd))] == odd
    store.put(digest(0), "key_" + "0" * 22, "acct_1")  # the same digest, now a standard id
    assert store.get(digest(0)).key_id == "key_" + "0" * 22


def test_put_get_replace_and_remove():
    store = KeyStore()
    assert store.get(digest(1)) is None and len(store) == 0
    store.put(digest(1), "key_" + "1" * 22, "acct_a")
    store.put(digest(2), "key_" + "2" * 22, "acct_a", expires_at=1.5, limit=Decimal("25.000000001"))
    assert store.get(digest(1)) == KeyEntry("key_" + "1" * 22, "acct_a")
    assert store.get(digest(2)) == KeyEntry("key_" + "2" * 22, "acct_a", 1.5, Decimal("25.000000001"))
    store.put(digest(1), "key_" + "1" * 22, "acct_a", limit=Decimal("3"))  # a limit set: seen at once
    assert store.get(digest(1)).limit == Decimal("3")
    store.put(digest(2), "key_" + "2" * 22, "acct_a")  # expiry and limit lifted
    assert store.get(digest(2)) == KeyEntry("key_" + "2" * 22, "acct_a")
    store.remove(digest(1))
    store.remove(digest(1))  # removing what is not held changes nothing
    assert store.get(digest(1)) is None and len(store) == 1
    assert store.get(digest(2)).key_id == "key_" + "2" * 22


def test_many_keys_survive_growth_and_the_removal_of_a_quarter():
    store, count = KeyStore(), 20_000
    for n in range(count):
        store.put(digest(n), f"key_{n:022d}", f"acct_{n // 5}")
    assert len(store) == count
    assert all(store.get(digest(n)) == KeyEntry(f"key_{n:022d}", f"acct_{n // 5}") for n in range(count))
    for n in range(0, count, 4):
        store.remove(digest(n))
    for n in range(count):
        entry = store.get(digest(n))
        assert (entry is None) if n % 4 == 0 else entry == KeyEntry(f"key_{n:022d}", f"acct_{n // 5}")
    assert len(store) == count - count // 4
    assert store.get(digest(count + 1)) is None


def test_an_account_is_stored_once_whatever_number_of_keys_it_has():
    store = KeyStore()
    for n in range(50):
        store.put(digest(n), f"key_{n:022d}", f"acct_{n % 3}")
    assert len(store._accounts) == 3
    assert {store.get(digest(n)).account_id for n in range(50)} == {"acct_0", "acct_1", "acct_2"}


def test_interned_strings_keep_their_numbers_through_growth():
    interned = Interned()
    numbers = {text: interned.number(text) for text in (f"acct_{n}" for n in range(5_000))}
    numbers["ä:ü@x"] = interned.number("ä:ü@x")
    assert all(interned.number(text) == number for text, number in numbers.items())
    assert all(interned.text(number) == text for text, number in numbers.items())
    assert len(interned) == len(numbers)


def test_the_memo_forgets_the_entry_of_a_key_that_changes(monkeypatch):
    monkeypatch.setattr(keystore, "MEMO_SIZE", 2)
    store = KeyStore()
    for n in range(3):
        store.put(digest(n), f"key_{n:022d}", "acct_1")
    assert [store.get(digest(n)).key_id for n in range(3)] == [f"key_{n:022d}" for n in range(3)]
    assert len(store._memo) <= 2
    store.put(digest(1), f"key_{1:022d}", "acct_1", expires_at=7.0)
    assert store.get(digest(1)).expires_at == 7.0
    store.remove(digest(1))
    assert store.get(digest(1)) is None


keys = st.integers(min_value=0, max_value=400)
changes = st.lists(
    st.tuples(
        st.sampled_from(["put", "remove"]),
        keys,
        st.sampled_from(["acct_a", "acct_b", "acct:c@d", "x"]),
        st.none() | st.floats(min_value=0, max_value=2e9),
        st.none() | st.decimals(min_value=0, max_value=10**6, places=9),
        st.booleans(),  # a key id of the standard form, or an odd one
    ),
    max_size=600,
)


@settings(max_examples=150, deadline=None)
@given(changes)
def test_the_store_answers_as_a_dict_would(changes):
    with mock.patch.object(keystore, "_MIN_SLOTS", 4):  # small: growth and wrapped probes happen
        store, expected = KeyStore(), {}
        check_against_a_dict(store, expected, changes)


def check_against_a_dict(store: KeyStore, expected: dict, changes: list) -> None:
    for action, n, account, expires_at, limit, standard in changes:
        key_id = f"key_{n:022d}" if standard else f"key_{n}"
        if action == "put":
            store.put(digest(n), key_id, account, expires_at, limit)
            expected[digest(n)] = KeyEntry(key_id, account, expires_at, limit)
        else:
            store.remove(digest(n))
            expected.pop(digest(n), None)
        assert store.get(digest(n)) == expected.get(digest(n))
    assert len(store) == len(expected)
    assert all(store.get(digest(n)) == expected.get(digest(n)) for n in range(401))
