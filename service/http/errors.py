"""One place that turns every failure into the `{"error": {"message", "type"}}` envelope."""

import logging

import asyncpg
from aiohttp import web

from events.errors import (
    DomainError,
    InvalidExpiry,
    InvalidName,
    InvalidSpendLimit,
    InvalidUsage,
    KeyExpired,
    KeyIdTaken,
    KeyLimitReached,
    KeyNotFound,
    KeyRevoked,
    KeyRotated,
    UsageRejected,
)
from service.app.errors import AppError, Contention, MomentInFuture, TreeBehind
from service.app.leaks import ReportNotSigned
from service.http.access_log import redact
from service.http.responses import ErrorDetail, ErrorEnvelope, json_response
from service.store import db
from service.store.db import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}


# The answer to each refusal of the rules (events.errors) and of the application (service.app.errors):
# 400 for a request that breaks a rule of the API, 422 for a well-formed one the state of the log refuses.
ANSWERS: dict[type[Exception], tuple[int, str]] = {
    KeyLimitReached: (409, "key_limit_reached"),
    KeyRevoked: (409, "key_revoked"),
    KeyExpired: (409, "key_expired"),
    KeyRotated: (409, "key_rotated"),
    KeyIdTaken: (409, "conflict"),
    KeyNotFound: (404, "not_found"),
    InvalidName: (400, "invalid_request"),
    InvalidExpiry: (400, "invalid_request"),
    InvalidSpendLimit: (400, "invalid_request"),
    InvalidUsage: (400, "invalid_request"),
    UsageRejected: (422, "unprocessable"),
    MomentInFuture: (422, "unprocessable"),
    Contention: (503, "service_unavailable"),
    TreeBehind: (503, "service_unavailable"),
    ReportNotSigned: (401, "invalid_token"),
}
_HEADERS = {Contention: {"Retry-After": "1"}, TreeBehind: {"Retry-After": "1"}}

# Text PostgreSQL refuses to store (a NUL character, bytes invalid in the database's encoding).
UNSTORABLE_TEXT = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(ErrorEnvelope(ErrorDetail(message, type_)), status, headers)


def _refusal(error: DomainError | AppError) -> web.Response:
    status, type_ = next(ANSWERS[cls] for cls in type(error).__mro__ if cls in ANSWERS)
    return error_response(status, type_, error.message, _HEADERS.get(type(error)))


def _from_http_exception(error: web.HTTPException, request: web.Request) -> web.Response:
    headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
    match error.status:
        case 404:
            return error_response(
                404, "not_found", f"No endpoint at {redact(request.path)}; see /openapi.json."
            )
        case 405:
            allowed = error.headers.get("Allow", "")
            return error_response(
                405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}.", headers
            )
        case 413:
            return error_response(
                413, "payload_too_large", "The request body is too large; see the limits in the API docs."
            )
        case status if status < 500:
            return error_response(status, "invalid_request", error.reason, headers)
    log.error("HTTP %s raised for %s %s", error.status, request.method, redact(request.path))
    return error_response(500, "internal_error", "Something went wrong on our side; try again.")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The envelope alone, for an app of its own; create_app's one middleware calls error_answer."""
    try:
        with db.one_deadline():  # however often the request uses the database: 503 at db.DEADLINE
            return await handler(request)
    except Exception as error:
        return error_answer(error, request)


def error_answer(error: Exception, request: web.Request) -> web.Response:
    """The envelope for what a handler raised; a redirect (an HTTPException under 400) is raised on."""
    match error:
        case ApiError():
            return error_response(error.status, error.type, error.message, error.headers)
        case DomainError() | AppError():
            return _refusal(error)
        case web.HTTPException() if error.status < 400:
            raise error
        case web.HTTPException():
            return _from_http_exception(error, request)
        case _ if isinstance(error, DATABASE_UNAVAILABLE):
            log.warning(
                "database unavailable for %s %s: %s",
                request.method,
                redact(request.path),
                type(error).__name__,
            )
            return error_response(
                503,
                "service_unavailable",
                "The service cannot reach its database right now; retry in a few seconds.",
                {"Retry-After": "2"},
            )
        case _ if isinstance(error, UNSTORABLE_TEXT):  # a backstop: input checks refuse such text first
            return error_response(
                400,
                "invalid_request",
                "The request holds a character that cannot be stored, such as NUL (\\u0000).",
            )
    log.error("unhandled error for %s %s", request.method, redact(request.path), exc_info=error)
    return error_response(500, "internal_error", "Something went wrong on our side; try again.")
