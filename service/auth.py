"""Who is calling: account users (JWT), the gateway and billing (service token)."""

import hmac
import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from service.config import Settings
from service.errors import ApiError


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
    """Checks account JWTs: HS256 with a shared secret, or RS256/ES256 with a PEM public key."""

    def __init__(self, settings: Settings):
        if settings.jwt_public_key:
            self._key, self._algorithms = settings.jwt_public_key, ["RS256", "ES256"]
        else:
            self._key, self._algorithms = settings.jwt_secret, ["HS256"]
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
        except jwt.InvalidTokenError:
            raise _invalid("The token is not valid: its signature or algorithm is not accepted.") from None
        subject, account_id, roles = (
            claims["sub"],
            claims.get("account_id", claims["sub"]),
            claims.get("roles", []),
        )
        if not isinstance(subject, str) or not isinstance(account_id, str) or not account_id:
            raise _invalid("The token's 'sub' and 'account_id' claims must be non-empty strings.")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise _invalid("The token's 'roles' claim must be a list of strings.")
        return Principal(subject=subject, account_id=account_id, roles=tuple(roles))


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
