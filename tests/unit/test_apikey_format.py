"""The sk- key format: enough randomness, a checksum that catches typos, only a digest stored."""

import hashlib

import pytest

from events import apikey


def test_generated_keys_are_well_formed_and_distinct():
    keys = {apikey.generate() for _ in range(2000)}
    assert len(keys) == 2000
    for key in keys:
        assert key.startswith("sk-") and len(key) == apikey.KEY_LENGTH
        assert apikey.is_well_formed(key)


def test_the_random_part_carries_at_least_190_bits():
    assert 62**apikey.BODY_LENGTH >= 2**256 >= 2**190
    assert apikey.RANDOM_BYTES * 8 >= 190


def test_every_single_character_typo_is_caught():
    key = apikey.generate()
    for index in range(len("sk-"), len(key)):
        for replacement in "0aZ":
            if key[index] != replacement:
                typo = key[:index] + replacement + key[index + 1 :]
                assert not apikey.is_well_formed(typo), typo


@pytest.mark.parametrize(
    "candidate",
    ["", "sk-", "sk-short", "pk-" + "a" * 49, "sk-" + "!" * 49, "sk-" + "a" * 50, "SK-" + "a" * 49],
)
def test_malformed_candidates_are_refused(candidate):
    assert not apikey.is_well_formed(candidate)


def test_digest_mask_and_last4():
    key = apikey.generate()
    assert apikey.digest(key) == hashlib.sha256(key.encode()).hexdigest()
    assert apikey.masked(apikey.last4(key)) == "sk-***..." + key[-4:]


def test_key_ids_are_not_keys():
    key_id = apikey.new_key_id()
    assert key_id.startswith("key_") and not apikey.is_well_formed(key_id)
