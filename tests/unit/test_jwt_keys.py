"""Account JWTs signed with a private key: RS256 and ES256 against the configured PEM public key."""

import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.config import Settings
from service.http.auth import TokenVerifier
from service.http.errors import ApiError

PRIVATE_KEYS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
}


def pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**extra) -> dict:
    return {"sub": "user_1", "account_id": "acct_1", "exp": int(time.time()) + 60, **extra}


@pytest.mark.parametrize("algorithm", sorted(PRIVATE_KEYS))
def test_a_token_signed_with_the_private_key_is_accepted(algorithm):
    private_key = PRIVATE_KEYS[algorithm]()
    verifier = TokenVerifier(Settings(jwt_public_key=pem(private_key)))
    principal = verifier.verify(jwt.encode(claims(roles=["auditor"]), private_key, algorithm=algorithm))
    assert (principal.subject, principal.account_id, principal.roles) == ("user_1", "acct_1", ("auditor",))


@pytest.mark.parametrize("algorithm", sorted(PRIVATE_KEYS))
def test_a_token_signed_with_another_key_or_expired_is_refused(algorithm):
    private_key, other_key = PRIVATE_KEYS[algorithm](), PRIVATE_KEYS[algorithm]()
    verifier = TokenVerifier(Settings(jwt_public_key=pem(private_key)))
    for token in (
        jwt.encode(claims(), other_key, algorithm=algorithm),
        jwt.encode(claims(exp=int(time.time()) - 5), private_key, algorithm=algorithm),
    ):
        with pytest.raises(ApiError) as refused:
            verifier.verify(token)
        assert (refused.value.status, refused.value.type) == (401, "invalid_token")


def test_an_hs256_token_made_with_the_public_key_as_secret_is_refused():
    """Algorithm confusion: the public key is public, so it must never work as an HMAC secret."""
    public_pem = pem(PRIVATE_KEYS["RS256"]())
    verifier = TokenVerifier(Settings(jwt_public_key=public_pem))
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signing_input = header + b"." + payload
    signature = jwt.utils.base64url_encode(
        hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    )
    with pytest.raises(ApiError) as refused:
        verifier.verify((signing_input + b"." + signature).decode())
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("configured", "token_claims", "accepted"),
    [
        ({"jwt_issuer": "https://accounts"}, {"iss": "https://accounts"}, True),
        ({"jwt_issuer": "https://accounts"}, {"iss": "https://elsewhere"}, False),
        ({"jwt_audience": "keyledger"}, {"aud": "keyledger"}, True),
        ({"jwt_audience": "keyledger"}, {"aud": "another-service"}, False),
    ],
)
def test_issuer_and_audience_are_checked_when_configured(configured, token_claims, accepted):
    secret = "s" * 48
    verifier = TokenVerifier(Settings(jwt_secret=secret, **configured))
    token = jwt.encode(claims(**token_claims), secret, algorithm="HS256")
    if accepted:
        assert verifier.verify(token).account_id == "acct_1"
    else:
        with pytest.raises(ApiError):
            verifier.verify(token)
