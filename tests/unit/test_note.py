"""events/note.py: C2SP signed notes with Ed25519 keys, and tlog checkpoints.

The note and key encodings are also checked against Go's golang.org/x/mod/sumdb/note, an
implementation we did not write, in tests/system/test_go_verifier.py."""

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events.note import Checkpoint, NoteError, Signer, Verifier, open_note

TEXT = "keyledger.local/log\n3\n" + base64.b64encode(bytes(range(32))).decode() + "\n"


def test_a_signed_note_is_its_text_a_blank_line_and_a_signature_line_by_the_key():
    signer = Signer.generate("keyledger.local")
    signed = signer.sign(TEXT)
    text, signature_line = signed.split("\n\n")
    assert text + "\n" == TEXT
    dash, name, encoded = signature_line.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", "keyledger.local")
    raw = base64.b64decode(encoded)
    public = signer.verifier.public
    assert raw[:4] == hashlib.sha256(b"keyledger.local\n\x01" + public).digest()[:4]
    # The signature is plain Ed25519 over the text's bytes
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], TEXT.encode())
    assert open_note(signed, signer.verifier) == TEXT


def test_keys_are_written_as_go_writes_them_and_read_back():
    seed = bytes(range(32))
    signer = Signer("example.com/log", seed)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    key_hash = hashlib.sha256(b"example.com/log\n\x01" + public).digest()[:4].hex()
    assert (
        signer.verifier.text() == f"example.com/log+{key_hash}+" + base64.b64encode(b"\x01" + public).decode()
    )
    assert (
        signer.secret_text()
        == f"PRIVATE+KEY+example.com/log+{key_hash}+" + base64.b64encode(b"\x01" + seed).decode()
    )
    assert Signer.parse(signer.secret_text()).verifier == signer.verifier
    assert Verifier.parse(signer.verifier.text()) == signer.verifier
    assert "PRIVATE" not in repr(signer) and base64.b64encode(b"\x01" + seed).decode() not in repr(signer)


def changed(signed: str) -> str:
    return signed.replace("\n3\n", "\n4\n")


def test_a_changed_text_a_foreign_key_or_no_signature_is_refused():
    signer, stranger = Signer.generate("keyledger.local"), Signer.generate("keyledger.local")
    signed = signer.sign(TEXT)
    with pytest.raises(NoteError, match="does not verify"):
        open_note(changed(signed), signer.verifier)
    with pytest.raises(NoteError, match="no signature by"):
        open_note(signed, stranger.verifier)
    with pytest.raises(NoteError, match="blank line"):
        open_note(TEXT, signer.verifier)
    forged = signed.split("\n\n")[0] + "\n\n" + stranger.sign(TEXT).split("\n\n")[1]
    with pytest.raises(NoteError, match="no signature by"):
        open_note(forged, signer.verifier)


def test_a_witness_signature_beside_ours_is_allowed():
    signer, witness = Signer.generate("keyledger.local"), Signer.generate("witness.example")
    signed = signer.sign(TEXT)
    cosigned = signed + witness.sign(TEXT).split("\n\n")[1]
    assert open_note(cosigned, signer.verifier) == TEXT
    assert open_note(cosigned, witness.verifier) == TEXT


@pytest.mark.parametrize(
    "key, problem",
    [
        ("", "has the form"),
        ("name+abcd1234", "has the form"),
        ("name+00000000+" + base64.b64encode(b"\x01" + bytes(32)).decode(), "does not match"),
        ("name+00000000+!!!", "not base64"),
        ("name+00000000+" + base64.b64encode(b"\x02" + bytes(32)).decode(), "not an Ed25519 key"),
        ("name+00000000+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "not an Ed25519 key"),
    ],
)
def test_a_malformed_verifier_key_is_refused_with_what_is_wrong(key, problem):
    with pytest.raises(NoteError, match=problem):
        Verifier.parse(key)


def test_a_signer_key_must_say_private_key_and_match_its_hash():
    signer = Signer.generate("keyledger.local")
    with pytest.raises(NoteError, match="starts with PRIVATE"):
        Signer.parse(signer.secret_text().replace("PRIVATE+KEY", "SECRET+KEY"))
    with pytest.raises(NoteError, match="does not match"):
        Signer.parse(signer.secret_text().replace(signer.verifier.key_hash.hex(), "00000000"))
    with pytest.raises(NoteError, match="no '\\+' and no space"):
        Signer.generate("has space")


@pytest.mark.parametrize("text", ["no newline", "a\n\nb\n", "tab\tinside\n"])
def test_a_text_that_cannot_be_a_note_is_not_signed(text):
    with pytest.raises(NoteError):
        Signer.generate("keyledger.local").sign(text)


def test_a_checkpoint_is_origin_size_and_root_one_per_line():
    checkpoint = Checkpoint("keyledger.local/log", 3, bytes(range(32)))
    assert checkpoint.text() == TEXT
    assert Checkpoint.parse(TEXT) == checkpoint
    assert Checkpoint.parse(TEXT + "an extension line\n") == checkpoint


@pytest.mark.parametrize(
    "text, problem",
    [
        ("keyledger.local/log\n3\n", "one per line"),
        ("keyledger.local/log\n-3\nAAAA\n", "not a decimal"),
        ("keyledger.local/log\n03\nAAAA\n", "not a decimal"),
        ("keyledger.local/log\n3\n***\n", "not base64"),
        ("keyledger.local/log\n3\nAAAA\n", "not 32 bytes"),
    ],
)
def test_a_malformed_checkpoint_is_refused_with_what_is_wrong(text, problem):
    with pytest.raises(NoteError, match=problem):
        Checkpoint.parse(text)
