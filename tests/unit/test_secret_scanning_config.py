"""KEYLEDGER_SECRET_SCANNING_KEYS: GitHub's public-key document, as a path or as its text; anything
else stops keyledger with one line naming the variable. And the pattern registered with GitHub."""

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from events import apikey
from service import cli
from service.config import ConfigError, from_environment
from tests.helpers import GitHubSigner

VARIABLE = "KEYLEDGER_SECRET_SCANNING_KEYS"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "secret-scanning.md"


def test_unset_or_empty_accepts_no_report():
    assert from_environment({}).secret_scanning_keys is None
    assert from_environment({VARIABLE: ""}).secret_scanning_keys is None


def test_the_text_or_a_path_to_it_gives_every_listed_key_by_identifier(tmp_path):
    current, retired = GitHubSigner("current"), GitHubSigner("retired")
    document = current.keys_document(retired)
    (tmp_path / "keys.json").write_text(document)
    for value in (document, str(tmp_path / "keys.json")):
        keys = from_environment({VARIABLE: value}).secret_scanning_keys
        assert set(keys) == {"current", "retired"}
        assert keys["retired"].public_numbers() == retired.private_key.public_key().public_numbers()


def _pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    "value, complaint",
    [
        ("{not json", "must be JSON shaped like"),
        ('{"keys": []}', "must be JSON shaped like"),
        ('{"public_keys": [{"key_identifier": 1, "key": "x"}]}', "must be JSON shaped like"),
        ('{"public_keys": []}', "lists no public key"),
        ('{"public_keys": [{"key_identifier": "a", "key": "-----BEGIN PUBLIC KEY-----"}]}', "not a PEM ECDSA P-256"),
        (json.dumps({"public_keys": [{"key_identifier": "a", "key": _pem(ec.generate_private_key(ec.SECP384R1()))}]}), "not a PEM ECDSA P-256"),
        (json.dumps({"public_keys": [{"key_identifier": "a", "key": _pem(rsa.generate_private_key(65537, 2048))}]}), "not a PEM ECDSA P-256"),
        ("/no/such/keys.json", "cannot read the file"),
    ],
    ids=["not json", "other shape", "mistyped", "empty", "bad pem", "p-384", "rsa", "missing file"],
)  # fmt: skip
def test_a_malformed_value_names_the_variable_in_one_line(value, complaint):
    with pytest.raises(ConfigError) as refused:
        from_environment({VARIABLE: value})
    message = str(refused.value)
    assert message.startswith(VARIABLE) and complaint in message and "\n" not in message


def test_the_service_does_not_start_with_a_malformed_value(monkeypatch, capsys):
    monkeypatch.setenv(VARIABLE, "{not json")
    assert cli.main(["serve"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"keyledger serve: {VARIABLE} must be JSON") and err.count("\n") == 1


# The pattern to register with GitHub


def _finds(text: str) -> list[str]:
    return re.findall(apikey.LEAK_SCAN_PATTERN, text)


def test_the_documented_pattern_is_the_one_of_the_code():
    assert f"`{apikey.LEAK_SCAN_PATTERN}`" in DOCS.read_text()


def test_the_pattern_finds_every_generated_key_where_it_is_written():
    for key in (apikey.generate() for _ in range(500)):
        for text in (key, f'API_KEY="{key}"', f"token: {key}\n", f"Bearer {key},", f"'{key}'", f"x={key}."):
            assert _finds(text) == [key], text


def test_the_pattern_skips_near_misses():
    key = apikey.generate()
    body = key[len("sk-") :]
    near_misses = [
        key[:-1],  # one character short
        key + "a",  # one too many: part of a longer token
        "sk_" + body,
        "pk-" + body,
        "xsk-" + body,  # inside a longer word
        "_sk-" + body,
        key[:20] + "-" + key[21:],
        key[:20] + "é" + key[21:],
        key + "_suffix",
    ]
    for text in near_misses:
        assert _finds(text) == [], text


def test_a_match_with_a_wrong_checksum_is_left_to_the_endpoint():
    """The pattern cannot compute a CRC32: such a match reaches the endpoint, a false positive there."""
    key = apikey.generate()
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert _finds(typo) == [typo] and not apikey.is_well_formed(typo)
