"""The account rules, with no database: examples first, then properties over any command sequence."""

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.account import (
    MAX_ACTIVE_KEYS,
    Account,
    CreateKey,
    RevokeKey,
    SetSubscription,
    UpdateKey,
    decide,
    evolve,
    fold,
)
from events.errors import DomainError, InvalidName, KeyIdTaken, KeyLimitReached, KeyNotFound, KeyRevoked
from events.model import ApiKeyCreated, ApiKeyRenamed, ApiKeyRevoked, SubscriptionActivated

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def create(key_id: str, name: str = "Production backend") -> CreateKey:
    return CreateKey(key_id=key_id, name=name, key_digest="ab" * 32, last4="9fQz")


def run(*commands, state: Account | None = None) -> Account:
    state = state or Account()
    for command in commands:
        state = fold(decide(state, command, NOW), state)
    return state


def test_create_emits_one_event_with_the_trimmed_name():
    [event] = decide(Account(), create("key_1", "  Local dev  "), NOW)
    assert event == ApiKeyCreated(
        key_id="key_1", name="Local dev", key_digest="ab" * 32, last4="9fQz", created_at=NOW
    )


def test_the_sixth_active_key_is_refused_with_advice():
    state = run(*(create(f"key_{n}") for n in range(MAX_ACTIVE_KEYS)))
    with pytest.raises(KeyLimitReached, match="Revoke unused keys"):
        decide(state, create("key_6"), NOW)


def test_revoking_frees_a_slot():
    state = run(*(create(f"key_{n}") for n in range(MAX_ACTIVE_KEYS)), RevokeKey("key_0"))
    assert decide(state, create("key_6"), NOW)[0].key_id == "key_6"


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 101, "bell\x07", "tab\tinside", "right-to-left \u202eoverride", "isolate \u2066x"],
)
def test_invalid_names_are_refused(name):
    with pytest.raises(InvalidName):
        decide(Account(), create("key_1", name), NOW)


@pytest.mark.parametrize(
    "name", ["a", "x" * 100, "Zürich prod 🚀", "  padded  ", "family 👨\u200d👩\u200d👧"]
)
def test_valid_names_are_accepted(name):
    assert decide(Account(), create("key_1", name), NOW)[0].name == name.strip()


def test_rename_emits_the_previous_name_and_same_name_is_a_no_op():
    state = run(create("key_1", "old"))
    assert decide(state, UpdateKey("key_1", "new"), NOW) == [
        ApiKeyRenamed(key_id="key_1", name="new", previous_name="old", renamed_at=NOW)
    ]
    assert decide(state, UpdateKey("key_1", " old "), NOW) == []


def test_revoke_is_idempotent_and_a_revoked_key_cannot_be_renamed():
    state = run(create("key_1"))
    assert decide(state, RevokeKey("key_1"), NOW) == [ApiKeyRevoked(key_id="key_1", revoked_at=NOW)]
    state = run(RevokeKey("key_1"), state=state)
    assert decide(state, RevokeKey("key_1"), NOW) == []
    with pytest.raises(KeyRevoked):
        decide(state, UpdateKey("key_1", "new"), NOW)


def test_a_key_id_is_never_reused_even_after_revocation():
    state = run(create("key_1"), RevokeKey("key_1"))
    with pytest.raises(KeyIdTaken):
        decide(state, create("key_1"), NOW)


@pytest.mark.parametrize("command", [UpdateKey("key_x", "name"), RevokeKey("key_x")])
def test_unknown_keys_are_not_found(command):
    with pytest.raises(KeyNotFound):
        decide(run(create("key_1")), command, NOW)


def test_subscription_turns_on_and_off_once():
    assert decide(Account(), SetSubscription(active=False), NOW) == []
    state = run(SetSubscription(active=True, plan="pro"))
    assert state.subscription_plan == "pro"
    assert decide(state, SetSubscription(active=True, plan="pro"), NOW) == []
    assert decide(state, SetSubscription(active=True, plan="team"), NOW) == [
        SubscriptionActivated(plan="team", activated_at=NOW)
    ]
    assert run(SetSubscription(active=False), state=state).subscription_plan is None


def test_version_counts_events():
    assert run(create("key_1"), UpdateKey("key_1", "b"), RevokeKey("key_1"), RevokeKey("key_1")).version == 3


key_ids = st.sampled_from([f"key_{n}" for n in range(9)])
names = st.sampled_from(["prod", "dev", "", "x" * 101, "ctl\x01", "  spaced  "])
commands = st.one_of(
    st.builds(create, key_ids, names),
    st.builds(UpdateKey, key_ids, names),
    st.builds(RevokeKey, key_ids),
    st.builds(SetSubscription, st.booleans(), st.sampled_from(["pro", "team"])),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(commands, max_size=60))
def test_any_command_sequence_keeps_the_invariants(sequence):
    state, ever_revoked = Account(), set()
    for command in sequence:
        try:
            new_events = decide(state, command, NOW)
        except DomainError:
            continue
        for event in new_events:
            state = evolve(state, event)
        ever_revoked |= {key_id for key_id, key in state.keys.items() if key.revoked}
        assert state.active_key_count(NOW) <= MAX_ACTIVE_KEYS
        assert all(state.keys[key_id].revoked for key_id in ever_revoked)
