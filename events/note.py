"""C2SP signed notes (Ed25519) and the tlog-checkpoint they carry.

A note is UTF-8 text ending in a newline; signed, it is followed by a blank line and one line per
signature: `— <key name> <base64(key hash || signature)>`. A key's hash is the first 4 bytes of
SHA-256(name || "\\n" || 0x01 || public key), 0x01 naming Ed25519. Keys are written as Go's
golang.org/x/mod/sumdb/note writes them:

    signer    PRIVATE+KEY+<name>+<hash, 8 hex digits>+<base64(0x01 || 32-byte seed)>
    verifier  <name>+<hash, 8 hex digits>+<base64(0x01 || 32-byte public key)>

A checkpoint's text is the log's origin, the tree size in decimal and the base64 root hash, one
per line (C2SP tlog-checkpoint). Pure: no key is read from or written to anywhere here.
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = b"\x01"
_DASH = "\u2014 "


class NoteError(ValueError):
    """A key, note or checkpoint that is malformed or does not verify; the message says which."""


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"a key name is not empty and has no '+' and no space: {name!r}")


def _decode_key(text: str, parts: int, what: str) -> tuple[list[str], bytes]:
    fields = text.strip().split("+", parts - 1)  # base64 may hold "+": the key is the rest
    if len(fields) != parts:
        raise NoteError(
            f"a {what} key has the form {'PRIVATE+KEY+' if parts == 5 else ''}<name>+<hash>+<key>"
        )
    try:
        raw = base64.b64decode(fields[-1], validate=True)
    except binascii.Error as error:
        raise NoteError(f"the {what} key's last field is not base64") from error
    if len(raw) != 33 or raw[:1] != ED25519:
        raise NoteError(f"the {what} key is not an Ed25519 key (0x01 and 32 bytes)")
    return fields, raw[1:]


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.public)

    def text(self) -> str:
        return f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(ED25519 + self.public).decode()}"

    @classmethod
    def parse(cls, text: str) -> "Verifier":
        [name, key_hash, _], public = _decode_key(text, 3, "verifier")
        _check_name(name)
        verifier = cls(name, public)
        if key_hash != verifier.key_hash.hex():
            raise NoteError(f"the verifier key's hash {key_hash} does not match its name and key")
        return verifier

    def verifies(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
        except InvalidSignature:
            return False
        return True


class Signer:
    def __init__(self, name: str, seed: bytes):
        _check_name(name)
        self.name = name
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._private.public_key().public_bytes_raw()
        self.verifier = Verifier(name, public)

    def __repr__(self) -> str:  # never the seed
        return f"Signer({self.verifier.text()!r})"

    @classmethod
    def generate(cls, name: str) -> "Signer":
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> "Signer":
        [private, key, name, key_hash, _], seed = _decode_key(text, 5, "signer")
        if (private, key) != ("PRIVATE", "KEY"):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        signer = cls(name, seed)
        if key_hash != signer.verifier.key_hash.hex():
            raise NoteError(f"the signer key's hash {key_hash} does not match its name and key")
        return signer

    def secret_text(self) -> str:
        """The signer key as it is kept; write it only where it is kept, never to a log."""
        seed = self._private.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_hash.hex()}+{base64.b64encode(ED25519 + seed).decode()}"

    def sign(self, text: str) -> str:
        """The note with this key's signature line."""
        body = _note_text(text)
        signature = self._private.sign(body.encode())
        encoded = base64.b64encode(self.verifier.key_hash + signature).decode()
        return f"{body}\n{_DASH}{self.name} {encoded}\n"


def _note_text(text: str) -> str:
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("a note's text ends with a newline and has no blank line")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note's text has no control characters but newlines")
    return text


def open_note(signed: str, verifier: Verifier) -> str:
    """The text of a signed note that carries a valid signature by `verifier`; NoteError otherwise.
    Signatures by other keys are allowed (witnesses) and ignored."""
    text, separator, signatures = signed.rpartition("\n\n")
    if not separator:
        raise NoteError("a signed note is its text, a blank line and its signature lines")
    text = _note_text(text + "\n")
    if not signatures.endswith("\n"):
        raise NoteError("a signed note ends with a newline")
    for line in signatures[:-1].split("\n"):
        if not line.startswith(_DASH) or line.count(" ") != 2:
            raise NoteError(f"not a signature line: {line!r}")
        name, encoded = line[len(_DASH) :].split(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as error:
            raise NoteError(f"the signature of {name} is not base64") from error
        if name == verifier.name and raw[:4] == verifier.key_hash:
            if verifier.verifies(text.encode(), raw[4:]):
                return text
            raise NoteError(f"the signature of {name} does not verify: the note was changed or forged")
    raise NoteError(f"the note carries no signature by {verifier.name}+{verifier.key_hash.hex()}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> "Checkpoint":
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is its origin, its tree size and its root hash, one per line")
        origin, size, root = lines[:3]
        if not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError(f"the checkpoint's tree size is not a decimal number: {size!r}")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error as error:
            raise NoteError("the checkpoint's root hash is not base64") from error
        if len(digest) != 32:
            raise NoteError("the checkpoint's root hash is not 32 bytes")
        return cls(origin, int(size), digest)
