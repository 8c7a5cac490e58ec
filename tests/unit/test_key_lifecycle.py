"""Expiry, rotation, spend limits and leaks in the account rules, with no database: examples first,
then properties over any command sequence with time moving on."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from events.account import (
    MAX_ACTIVE_KEYS,
    Account,
    CreateKey,
    RevokeKey,
    RotateKey,
    UpdateKey,
    decide,
    evolve,
    fold,
)
from events.errors import (
    DomainError,
    InvalidExpiry,
    InvalidSpendLimit,
    KeyExpired,
    KeyRevoked,
    KeyRotated,
)
from events.model import ApiKeyCreated, ApiKeyExpirySet, ApiKeyRevoked, ApiKeyRotated, ApiKeySpendLimitSet

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def create(key_id: str, **fields) -> CreateKey:
    return CreateKey(key_id=key_id, name="Production backend", key_digest="ab" * 32, last4="9fQz", **fields)


def rotate(key_id: str, new_key_id: str, grace: int = 86_400) -> RotateKey:
    return RotateKey(key_id, new_key_id, key_digest="cd" * 32, last4="Zz99", grace_period_seconds=grace)


def run(*commands, state: Account | None = None, now: datetime = NOW) -> Account:
    state = state or Account()
    for command in commands:
        state = fold(decide(state, command, now), state)
    return state


# Expiry


def test_a_key_expires_at_its_instant_without_any_event():
    state = run(create("key_1", expires_at=NOW + HOUR))
    key = state.keys["key_1"]
    assert key.verifies(NOW + HOUR - timedelta(microseconds=1))
    assert not key.verifies(NOW + HOUR) and key.expired(NOW + HOUR)
    assert state.active_key_count(NOW + HOUR) == 0


@pytest.mark.parametrize(
    "expires_at", [NOW, NOW - HOUR, NOW + timedelta(days=1095, seconds=1)], ids=["now", "past", "too-far"]
)
def test_an_expiry_outside_the_window_is_refused(expires_at):
    with pytest.raises(InvalidExpiry):
        decide(Account(), create("key_1", expires_at=expires_at), NOW)


def test_an_expired_key_frees_its_slot_and_is_never_changed_again():
    state = run(*(create(f"key_{n}", expires_at=NOW + HOUR) for n in range(MAX_ACTIVE_KEYS)))
    later = NOW + 2 * HOUR
    assert decide(state, create("key_new"), later)[0].key_id == "key_new"
    for command in (
        UpdateKey("key_0", name="again"),
        UpdateKey("key_0", expires_at=None),
        rotate("key_0", "k"),
    ):
        with pytest.raises(KeyExpired):
            decide(state, command, later)
    assert decide(state, RevokeKey("key_0"), later) == []  # nothing left to stop


def test_update_sets_and_clears_expiry_and_limit_in_one_command():
    state = run(create("key_1"))
    events = decide(state, UpdateKey("key_1", expires_at=NOW + HOUR, monthly_spend_limit_chf="25"), NOW)
    assert events == [
        ApiKeyExpirySet(key_id="key_1", expires_at=NOW + HOUR, previous_expires_at=None, set_at=NOW),
        ApiKeySpendLimitSet(
            key_id="key_1",
            monthly_spend_limit_chf="25.000000000",
            previous_monthly_spend_limit_chf=None,
            set_at=NOW,
        ),
    ]
    state = fold(events, state)
    cleared = fold(
        decide(state, UpdateKey("key_1", expires_at=None, monthly_spend_limit_chf=None), NOW), state
    )
    assert cleared.keys["key_1"].expires_at is None and cleared.keys["key_1"].spend_limit is None
    assert decide(cleared, UpdateKey("key_1", expires_at=None), NOW) == []


def test_one_bad_field_of_an_update_changes_nothing():
    state = run(create("key_1"))
    with pytest.raises(InvalidSpendLimit):
        decide(state, UpdateKey("key_1", name="fine", monthly_spend_limit_chf="1e3"), NOW)


@pytest.mark.parametrize(
    "text", ["0", "0.000000000", "-1", "+1", "1e3", "1.0000000001", "1000000000.1", " 1", ""]
)
def test_a_spend_limit_outside_the_rules_is_refused(text):
    with pytest.raises(InvalidSpendLimit):
        decide(Account(), create("key_1", monthly_spend_limit_chf=text), NOW)


@pytest.mark.parametrize(
    ("text", "stored"),
    [("25", "25.000000000"), ("0.000000001", "0.000000001"), ("1000000000", "1000000000.000000000")],
)
def test_a_spend_limit_is_stored_exactly_with_9_places(text, stored):
    [created] = decide(Account(), create("key_1", monthly_spend_limit_chf=text), NOW)
    assert created.monthly_spend_limit_chf == stored


def test_updating_a_revoked_key_is_refused_whatever_the_field():
    state = run(create("key_1"), RevokeKey("key_1"))
    for command in (UpdateKey("key_1", name="x"), UpdateKey("key_1", monthly_spend_limit_chf="1")):
        with pytest.raises(KeyRevoked):
            decide(state, command, NOW)


# Rotation


def test_rotation_creates_the_new_key_with_name_and_limit_and_links_both_ways():
    state = run(create("key_old", monthly_spend_limit_chf="25", expires_at=NOW + 48 * HOUR))
    created, rotated = decide(state, rotate("key_old", "key_new", grace=3600), NOW)
    assert created == ApiKeyCreated(
        key_id="key_new",
        name="Production backend",
        key_digest="cd" * 32,
        last4="Zz99",
        created_at=NOW,
        monthly_spend_limit_chf="25.000000000",
        rotated_from="key_old",
    )
    assert rotated == ApiKeyRotated(
        key_id="key_old",
        new_key_id="key_new",
        grace_period_seconds=3600,
        expires_at=NOW + HOUR,
        rotated_at=NOW,
    )
    state = fold([created, rotated], state)
    assert state.keys["key_old"].verifies(NOW + HOUR - timedelta(seconds=1))  # both verify in the grace
    assert not state.keys["key_old"].verifies(NOW + HOUR)
    assert state.keys["key_new"].expires_at is None


def test_a_grace_past_the_keys_own_expiry_keeps_the_earlier_one():
    state = run(create("key_old", expires_at=NOW + HOUR))
    _, rotated = decide(state, rotate("key_old", "key_new", grace=7 * 86400), NOW)
    assert rotated.expires_at == NOW + HOUR


def test_a_rotation_without_grace_revokes_the_old_key_at_once():
    state = run(create("key_old"))
    events = decide(state, rotate("key_old", "key_new", grace=0), NOW)
    assert events[-1] == ApiKeyRevoked(key_id="key_old", revoked_at=NOW, reason="rotated")
    assert not fold(events, state).keys["key_old"].verifies(NOW)


def test_rotation_works_at_the_limit_and_a_rotated_key_is_rotated_once():
    state = run(*(create(f"key_{n}") for n in range(MAX_ACTIVE_KEYS)))
    state = run(rotate("key_0", "key_new"), state=state)
    assert state.active_key_count(NOW) == MAX_ACTIVE_KEYS
    with pytest.raises(KeyRotated, match="key_new"):
        decide(state, rotate("key_0", "key_other"), NOW)
    with pytest.raises(KeyRotated, match="key_new"):  # its grace is the rotation's, not the user's
        decide(state, UpdateKey("key_0", expires_at=None), NOW)
    assert run(UpdateKey("key_0", name="legacy"), state=state).keys["key_0"].name == "legacy"


def test_rotating_a_revoked_or_expired_key_is_refused():
    with pytest.raises(KeyRevoked):
        decide(run(create("key_1"), RevokeKey("key_1")), rotate("key_1", "key_2"), NOW)
    with pytest.raises(KeyExpired):
        decide(run(create("key_1", expires_at=NOW + HOUR)), rotate("key_1", "key_2"), NOW + HOUR)


# Leaks


def test_a_leaked_key_that_still_verifies_is_revoked_with_the_url_and_only_once():
    state = run(create("key_1"), rotate("key_1", "key_2"))  # key_1 in its grace period
    leak = RevokeKey("key_1", reason="leaked", url="https://github.com/o/r/blob/main/.env")
    [revoked] = decide(state, leak, NOW)
    assert revoked.reason == "leaked" and revoked.url == leak.url
    assert decide(fold([revoked], state), leak, NOW) == []


# Properties

KEY_IDS = [f"key_{n}" for n in range(8)]
key_ids = st.sampled_from(KEY_IDS)
moments = st.sampled_from([None, NOW + HOUR, NOW + 5 * HOUR, NOW - HOUR])
limits = st.sampled_from([UNSET, None, "25", "0", "1e3"])
steps = st.one_of(
    st.builds(lambda key_id, at: create(key_id, expires_at=at), key_ids, moments),
    st.builds(
        UpdateKey,
        key_ids,
        st.sampled_from([UNSET, "renamed", ""]),
        st.sampled_from([UNSET, None, NOW + 3 * HOUR]),
        limits,
    ),
    st.builds(
        lambda old, new, grace: rotate(old, new, grace), key_ids, key_ids, st.sampled_from([0, 60, 3600])
    ),
    st.builds(RevokeKey, key_ids, st.sampled_from(["user", "leaked"])),
    st.integers(min_value=1, max_value=4 * 3600).map(lambda seconds: timedelta(seconds=seconds)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(steps, max_size=60))
def test_any_sequence_keeps_the_lifecycle_invariants(sequence):
    state, now = Account(), NOW
    dead: set[str] = set()  # revoked or expired once: never verifies again
    rotations: dict[str, str] = {}  # old -> new, from ApiKeyRotated
    replaces: dict[str, str] = {}  # new -> old, from ApiKeyCreated.rotated_from
    for step in sequence:
        if isinstance(step, timedelta):
            now += step
        else:
            try:
                new_events = decide(state, step, now)
            except DomainError:
                new_events = []
            for event in new_events:
                state = evolve(state, event)
                if isinstance(event, ApiKeyRotated):
                    assert event.key_id not in rotations, "a key was rotated twice"
                    rotations[event.key_id] = event.new_key_id
                if isinstance(event, ApiKeyCreated) and event.rotated_from is not None:
                    replaces[event.key_id] = event.rotated_from
        assert state.active_key_count(now) <= MAX_ACTIVE_KEYS
        dead |= {key_id for key_id, key in state.keys.items() if not key.verifies(now)}
        assert not any(state.keys[key_id].verifies(now) for key_id in dead)
        assert {new: old for old, new in rotations.items()} == replaces  # every rotation links both ways
        assert all(state.keys[old].rotated_to == new for old, new in rotations.items())
