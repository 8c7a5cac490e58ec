"""Reading request bodies: JSON only, size-limited, validated against a msgspec struct."""

from typing import TypeVar

import msgspec
from aiohttp import web

from service.errors import ApiError

T = TypeVar("T")

DEFAULT_BODY_LIMIT = 1024 * 1024  # 1 MiB
LARGEST_BODY_LIMIT = 8 * 1024 * 1024  # the usage batch endpoint


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"The request body is larger than {limit // 1024} KiB allowed here."
    )


async def read_json(request: web.Request, type_: type[T], limit: int = DEFAULT_BODY_LIMIT) -> T:
    if request.content_type != "application/json":
        raise ApiError(415, "invalid_request", "Send the body as JSON with Content-Type: application/json.")
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    body = await request.read()  # aiohttp itself stops at LARGEST_BODY_LIMIT
    if len(body) > limit:
        raise _too_large(limit)
    try:
        return msgspec.json.decode(body, type=type_, strict=True)
    except msgspec.ValidationError as error:
        raise ApiError(
            422, "unprocessable", f"The body does not match what this endpoint takes: {error}."
        ) from None
    except msgspec.DecodeError as error:
        raise ApiError(400, "invalid_request", f"The body is not valid JSON: {error}.") from None
