"""Who is calling: account users (JWT), the gateway and billing (service token)."""

import hmac
import time
from dataclasses import dataclass

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from events.rules import ACCOUNT_ID_RULE, is_account_id
from service.config import ConfigError, Settings
from service.http.errors import ApiError


@dataclass(frozen=True)
class Principal:
    subject: str
    account_id: str
    roles: tuple[str, ...] = ()


def bearer_token(request: web.Request, what: str) -> str:
    """The token of `Authorization: Bearer …`, or a 401 that says what to send."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "authentication_required",
            f"Send {what} in the header Authorization: Bearer <token>.",
            {"WWW-Authenticate": "Bearer"},
        )
    return token


class TokenVerifier:
    """Checks account JWTs: HS256 with a shared secret, or RS256/ES256 with a PEM public key.

    Exactly one algorithm is accepted, the one the configured key is for: a token cannot choose
    another one in its header (`none`, HS256 with the public key as the secret, ES256 against an RSA
    key, …)."""

    def __init__(self, settings: Settings):
        if settings.jwt_public_key:
            self._key, algorithm = _public_key(settings.jwt_public_key)
        else:
            self._key, algorithm = settings.jwt_secret, "HS256"
        self._algorithms = [algorithm]
        self._issuer, self._audience = settings.jwt_issuer, settings.jwt_audience

    def verify(self, token: str) -> Principal:
        if token.startswith("sk-"):
            raise _invalid("This endpoint takes your account's session JWT, not an sk- API key.")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("The token has expired; sign in again to get a new one.") from None
        except jwt.MissingRequiredClaimError as error:
            raise _invalid(f"The token lacks the required claim '{error.claim}'.") from None
        except jwt.InvalidIssuerError:
            raise _invalid("The token was issued by someone this service does not trust.") from None
        except jwt.InvalidAudienceError:
            raise _invalid("The token is meant for another audience.") from None
        except jwt.PyJWTError:  # InvalidTokenError, and InvalidKeyError (its key type does not fit the alg)
            raise _invalid("The token is not valid: its signature or algorithm is not accepted.") from None
        subject, account_id, roles = (
            claims["sub"],
            claims.get("account_id", claims["sub"]),
            claims.get("roles", []),
        )
        if not isinstance(subject, str) or not isinstance(account_id, str) or not account_id:
            raise _invalid("The token's 'sub' and 'account_id' claims must be non-empty strings.")
        if not is_account_id(account_id):
            raise _invalid(f"The token's account id ('account_id', else 'sub') must be {ACCOUNT_ID_RULE}.")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise _invalid("The token's 'roles' claim must be a list of strings.")
        return Principal(subject=subject, account_id=account_id, roles=tuple(roles))


def _public_key(pem: str) -> tuple[PublicKeyTypes, str]:
    """The key of KEYLEDGER_JWT_PUBLIC_KEY, parsed once at start-up, and the one algorithm it verifies."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise ConfigError(
            "KEYLEDGER_JWT_PUBLIC_KEY is not a PEM public key: it must start with "
            "-----BEGIN PUBLIC KEY----- (an RSA key for RS256, or a P-256 EC key for ES256)."
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError(
        "KEYLEDGER_JWT_PUBLIC_KEY must be an RSA public key (RS256) or a P-256 EC public key (ES256)."
    )


def _invalid(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def issue_token(
    secret: str,
    account_id: str,
    subject: str | None = None,
    ttl_seconds: int = 86400,
    roles: list[str] | None = None,
) -> str:
    """An HS256 token, for development and tests; production tokens come from the account system."""
    now = int(time.time())
    claims = {"sub": subject or account_id, "account_id": account_id, "iat": now, "exp": now + ttl_seconds}
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, secret, algorithm="HS256")


def check_service_token(request: web.Request, expected: str) -> None:
    token = bearer_token(request, "the service token")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise _invalid("The service token is not valid; use the one keyledger was configured with.")
