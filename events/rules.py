"""The rules a value must meet before any command uses it: account ids, key names, expiry, spend limits.

Each check returns the value in its one stored form, or raises the domain error that says what to
change.
"""

import re
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal

from events.errors import InvalidExpiry, InvalidName, InvalidSpendLimit
from events.usage import chf_text

MAX_NAME_LENGTH = 100
MAX_EXPIRY = timedelta(days=1095)
MAX_SPEND_LIMIT = Decimal(1_000_000_000)
# An account id: what account systems hand out (acct_…, UUIDs, e-mail addresses, auth0|…), and nothing
# that reads as a path (".", "..", "/"), a control character, or text that looks like something else
# (bidi, zero-width). `(?![\s\S])` is the end of the text in Python and in JSON Schema alike: Python's
# `$` would let a trailing newline through.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@|+-]{0,99}(?![\s\S])"
ACCOUNT_ID_RULE = "1 to 100 letters, digits or _ . : @ | + -, starting with a letter or digit"
SPEND_LIMIT_PATTERN = r"^[0-9]+(\.[0-9]{1,9})?(?![\s\S])"
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)
_SPEND_LIMIT = re.compile(SPEND_LIMIT_PATTERN)
# Bidirectional overrides and isolates can make a name read differently from what it is.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Other invisible format characters (zero-width space, word joiner, BOM, soft hyphen: category Cf) can
# make two names look the same; only the joiners that emoji sequences and some scripts need may stay.
_JOINERS = frozenset("\u200c\u200d")


def is_account_id(text: str) -> bool:
    return _ACCOUNT_ID.match(text) is not None


def normalize_name(name: str) -> str:
    """Trim the name and check it, or raise `InvalidName` saying what to change."""
    name = name.strip()
    if not name:
        raise InvalidName('Give the key a name of 1 to 100 characters, e.g. "Production backend".')
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"The key name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}.")
    for char in name:
        category = unicodedata.category(char)
        if (
            char in _BIDI_CONTROLS
            or category in ("Cc", "Cs", "Co")
            or (category == "Cf" and char not in _JOINERS)
        ):
            raise InvalidName(
                f"The key name contains the control or invisible character U+{ord(char):04X}; use printable characters only."
            )
    return name


def check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    """An expiry in the future and at most 1095 days ahead, or None (the key does not expire)."""
    if expires_at is None:
        return None
    if expires_at <= now:
        raise InvalidExpiry("expires_at must lie in the future; to stop a key now, revoke it.")
    if expires_at > now + MAX_EXPIRY:
        raise InvalidExpiry(f"expires_at must lie at most {MAX_EXPIRY.days} days ahead.")
    return expires_at


def spend_limit(text: str | None) -> str | None:
    """The monthly limit in CHF with 9 places ("25" -> "25.000000000"), or None (no limit)."""
    if text is None:
        return None
    if not _SPEND_LIMIT.match(text):
        raise InvalidSpendLimit(
            f'monthly_spend_limit_chf {text[:40]!r} must be a decimal string such as "25.00": digits, '
            "at most 9 decimal places, no sign or exponent."
        )
    amount = Decimal(text)
    if not 0 < amount <= MAX_SPEND_LIMIT:
        raise InvalidSpendLimit("monthly_spend_limit_chf must be more than 0 and at most 1000000000.")
    return chf_text(amount)
