"""The secret key format: `sk-` + 43 base62 characters (256 random bits) + a 6-character checksum.

The checksum (CRC32 of the random part, as GitHub's token format does) lets a mistyped or made-up
key be refused without touching a cache or a database.
"""

import hashlib
import re
import secrets
import zlib

PREFIX = "sk-"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_BYTES = 32
BODY_LENGTH = 43  # 62**43 > 2**256, so every 32-byte value fits
CHECKSUM_LENGTH = 6  # 62**6 > 2**32
KEY_LENGTH = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
MASK = "sk-***..."

_ALPHABET_SET = frozenset(ALPHABET)


def base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate() -> str:
    body = base62(int.from_bytes(secrets.token_bytes(RANDOM_BYTES), "big"), BODY_LENGTH)
    return PREFIX + body + checksum(body)


def is_well_formed(key: str) -> bool:
    """True when the key has the right prefix, length, alphabet and checksum."""
    if len(key) != KEY_LENGTH or not key.startswith(PREFIX):
        return False
    body, check = key[len(PREFIX) : -CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    if not _ALPHABET_SET.issuperset(body) or not _ALPHABET_SET.issuperset(check):
        return False
    return secrets.compare_digest(checksum(body), check)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def last4(key: str) -> str:
    return key[-4:]


def masked(last_four: str) -> str:
    return MASK + last_four


# What new_key_id makes (key_ + base62), with room to grow; `(?![\s\S])` ends the text in Python and
# in JSON Schema alike.
KEY_ID_PATTERN = r"^key_[0-9A-Za-z]{1,64}(?![\s\S])"
_KEY_ID = re.compile(KEY_ID_PATTERN)


def is_key_id(text: str) -> bool:
    return _KEY_ID.match(text) is not None


def new_key_id() -> str:
    return "key_" + base62(int.from_bytes(secrets.token_bytes(16), "big"), 22)


# What to register with GitHub's secret-scanning partner program (docs/secret-scanning.md): the
# prefix and 49 base62 characters between word boundaries. A regular expression cannot check the
# checksum; the report endpoint does, so a match with a wrong one is labelled a false positive.
LEAK_SCAN_PATTERN = rf"\bsk-[0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}}\b"
