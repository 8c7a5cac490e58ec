"""Leaked keys: GitHub's secret-scanning partner reports, checked and acted on.

GitHub signs each report (ECDSA P-256, SHA-256, base64 DER) with the key its identifier names; the
signature covers the raw body, so it is checked before the body is parsed. Each reported token that
is one of our keys is a true positive; one that still verifies is revoked with reason "leaked".
"""

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from events import apikey
from events.account import RevokeKey
from projections import accounts as accounts_projection
from service.app import commands
from service.app.errors import AppError
from service.store import db

ACTOR = "secret-scanning"
LEAKED = "leaked"


class ReportNotSigned(AppError):
    """The report is not signed by a key we hold: nothing of it is read or acted on."""


@dataclass(frozen=True)
class Finding:
    token_hash: str  # hex SHA-256 of the token: what GitHub matches the answer with
    true_positive: bool
    revoked: bool  # this report revoked a live key


def signing_key(
    keys: Mapping[str, ec.EllipticCurvePublicKey] | None, identifier: str | None, signature: str | None
) -> ec.EllipticCurvePublicKey:
    """The key that must have signed the report (checked before its body is read); else ReportNotSigned
    with a message that says what to fix."""
    if keys is None:
        raise ReportNotSigned(
            "This service accepts no secret-scanning reports: KEYLEDGER_SECRET_SCANNING_KEYS is not set."
        )
    if not identifier or not signature:
        raise ReportNotSigned(
            "Send the report with the headers Github-Public-Key-Identifier and Github-Public-Key-Signature."
        )
    key = keys.get(identifier)
    if key is None:
        raise ReportNotSigned(
            "Github-Public-Key-Identifier names no key in KEYLEDGER_SECRET_SCANNING_KEYS; "
            "refresh that list from GitHub's /meta/public_keys/secret_scanning."
        )
    return key


def check_signature(key: ec.EllipticCurvePublicKey, signature: str, body: bytes) -> None:
    """Return when `signature` (base64 DER) is the key's ECDSA P-256 SHA-256 signature of the raw
    `body`; else raise ReportNotSigned."""
    try:
        key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise ReportNotSigned(
            "Github-Public-Key-Signature is not a valid ECDSA P-256 SHA-256 signature (base64 DER) "
            "of the raw body by the key named in Github-Public-Key-Identifier."
        ) from None


async def act_on_report(
    pool: db.Pool, reported: Sequence[tuple[str, str | None]], metadata: dict
) -> list[Finding]:
    """For each (token, url) in order: is it one of our keys; a live one is revoked in its account's
    stream, with the url in the event. A token already revoked or expired is left as it is, so the
    same report sent again changes nothing more."""
    digests = [hashlib.sha256(token.encode()).digest() for token, _ in reported]
    ours = [apikey.is_well_formed(token) for token, _ in reported]
    async with pool.acquire() as connection:
        known = await accounts_projection.keys_by_digest(
            connection, [digest for digest, well_formed in zip(digests, ours, strict=True) if well_formed]
        )
    findings = []
    for digest, well_formed, (_, url) in zip(digests, ours, reported, strict=True):
        key = known.get(digest) if well_formed else None
        revoked = False
        if key is not None:
            command = RevokeKey(key["key_id"], reason=LEAKED, url=url)
            _, stored = await commands.execute(pool, key["account_id"], command, {**metadata, "actor": ACTOR})
            revoked = bool(stored)
        findings.append(Finding(digest.hex(), key is not None, revoked))
    return findings
