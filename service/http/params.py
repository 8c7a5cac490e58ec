"""Query parameters: each read strictly, with a 400 that names the parameter and the form it takes."""

import re
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web
from multidict import MultiMapping

from service.http.errors import ApiError

AS_OF = "as_of"
_ZONED_TIME = Annotated[datetime, msgspec.Meta(tz=True)]
_BEYOND_MICROSECONDS = re.compile(r"(\.[0-9]{6})[0-9]+")


def as_of(query: MultiMapping[str]) -> datetime | None:
    """The `as_of` of a list request in UTC, or None for the present state.

    Any other parameter is refused: a misspelt `as_of` must not quietly answer with the present.
    """
    unknown = sorted(set(query) - {AS_OF})
    if unknown:
        raise ApiError(
            400, "invalid_request", f"Unknown query parameter {unknown[0]!r}; this endpoint takes only as_of."
        )
    texts = query.getall(AS_OF, [])
    if not texts:
        return None
    if len(texts) > 1:
        raise ApiError(400, "invalid_request", f"Give {AS_OF} once.")
    return _utc_moment(texts[0])


def _utc_moment(text: str) -> datetime:
    expected = f"{AS_OF} must be an RFC 3339 time with a zone, e.g. 2026-11-01T00:00:00Z"
    hint = " (in a URL, write the + of an offset as %2B)" if " " in text else ""
    # Cut digits beyond microseconds instead of rounding up past the moment that was asked for.
    try:
        moment = msgspec.convert(_BEYOND_MICROSECONDS.sub(r"\1", text), _ZONED_TIME)
    except msgspec.ValidationError:
        raise ApiError(400, "invalid_request", f"{expected}{hint}; got {text[:64]!r}.") from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ApiError(400, "invalid_request", f"{AS_OF} must lie within the years 1 to 9999 UTC.") from None


def whole_number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name, str(default))
    # ASCII digits only ("²".isdigit() is true and int() refuses it), and few: int() refuses 4,300.
    if not (text.isascii() and text.isdigit() and len(text) <= 20) or not low <= int(text) <= high:
        raise ApiError(400, "invalid_request", f"{name} must be a whole number from {low} to {high}.")
    return int(text)
