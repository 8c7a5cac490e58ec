"""Reading request bodies: JSON only, size-limited, validated against a msgspec struct, each key once."""

import asyncio
import json
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

import msgspec
import msgspec.inspect
from aiohttp import http_exceptions, web

from service.http.errors import ApiError

T = TypeVar("T")

DEFAULT_BODY_LIMIT = 1024 * 1024  # 1 MiB
LARGEST_BODY_LIMIT = 8 * 1024 * 1024  # the usage batch endpoint
BODY_DEADLINE = 60.0  # seconds for a whole body to arrive: 8 MiB at 140 kB/s


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"The request body is larger than {limit // 1024} KiB allowed here."
    )


async def read_json(request: web.Request, type_: type[T], limit: int = DEFAULT_BODY_LIMIT) -> T:
    if request.content_type != "application/json":
        raise ApiError(415, "invalid_request", "Send the body as JSON with Content-Type: application/json.")
    return decode_json(await read_bytes(request, limit), type_)


def decode_json(body: bytes, type_: type[T]) -> T:
    """The body as `type_`; 400 naming what is wrong when it is not that JSON, or repeats a key."""
    try:
        value = msgspec.json.decode(body, type=type_, strict=True)
    except msgspec.ValidationError as error:
        raise ApiError(
            400, "invalid_request", f"The body does not match what this endpoint takes: {error}."
        ) from None
    except msgspec.DecodeError as error:
        raise ApiError(400, "invalid_request", f"The body is not valid JSON: {error}.") from None
    except UnicodeDecodeError:  # msgspec's answer to a string that is not UTF-8
        raise ApiError(400, "invalid_request", "The body is not valid UTF-8; send JSON in UTF-8.") from None
    _refuse_repeated_keys(body, value)
    return value


async def read_bytes(request: web.Request, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    """The body; 413 as soon as it is declared or counted (chunked, decompressed) larger than `limit`,
    400 when its framing breaks, 408 when it does not arrive in time (a Content-Length that promises
    more than is sent, a body trickled byte by byte)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError:
        raise ApiError(
            408,
            "invalid_request",
            f"The body did not arrive within {BODY_DEADLINE:g} seconds; send it at once.",
        ) from None
    except (web.RequestPayloadError, http_exceptions.HttpProcessingError, ConnectionResetError):
        raise ApiError(
            400,
            "invalid_request",
            "The body could not be read: its chunked encoding or compression is broken, or it stopped.",
        ) from None
    return bytes(body)


# Repeated keys. msgspec keeps the last of `{"name": "a", "name": "b"}`, other parsers the first or
# refuse it: a body that two parsers (a gateway's and ours) read differently is refused instead.


def _refuse_repeated_keys(body: bytes, value: object) -> None:
    """400 when one JSON object of `body` (already decoded as `value`) holds a key twice."""
    if _counts_prove_unique(body, value):
        return
    try:
        json.loads(body, object_pairs_hook=_refuse_repeats)
    except _Repeated as repeated:
        raise ApiError(
            400,
            "invalid_request",
            f"The body holds the key {repeated.key!r} twice in one object; send each key once.",
        ) from None
    except ValueError:  # msgspec read it and the standard library cannot: parsers disagree on it
        raise ApiError(400, "invalid_request", "The body is JSON that parsers read differently.") from None


class _Repeated(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _refuse_repeats(pairs: list[tuple[str, object]]) -> None:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _Repeated(key)
        seen.add(key)


# The exact check parses the body a second time with the standard library (1.5 to 3 times what
# msgspec takes on a usage batch). Bodies made only of structs whose fields are all required need less: each of
# their objects holds each field at least once and no other key (forbid_unknown_fields), so they have
# at least as many keys as `fields`, the sum of their fields over all objects. In the body re-written
# without whitespace (msgspec's formatter, a fraction of a parse) every key is followed by `":`, and
# `":` elsewhere only follows an escaped quote inside a string. So if `":` appears exactly `fields`
# times, no object holds a key twice. A count above (such a quote) only sends the body to the exact check.
_SCALARS = (
    msgspec.inspect.StrType,
    msgspec.inspect.IntType,
    msgspec.inspect.FloatType,
    msgspec.inspect.BoolType,
    msgspec.inspect.NoneType,
    msgspec.inspect.DateTimeType,
    msgspec.inspect.DecimalType,
    msgspec.inspect.LiteralType,
)


@dataclass(frozen=True)
class _Shape:
    fields: int
    nested: tuple[tuple[str, type, bool], ...]  # (attribute, struct type, holds a list of them)


@cache
def _shape(cls: type) -> _Shape | None:
    """How to count the keys of a struct type's objects; None when they cannot be counted."""
    info = msgspec.inspect.type_info(cls)
    if not isinstance(info, msgspec.inspect.StructType) or not info.forbid_unknown_fields:
        return None
    nested = []
    for field in info.fields:
        if not field.required:
            return None
        outer = _unwrapped(field.type)
        is_list = isinstance(outer, msgspec.inspect.ListType)
        inner = _unwrapped(outer.item_type) if is_list else outer
        if isinstance(inner, msgspec.inspect.StructType):
            if _shape(inner.cls) is None:
                return None
            nested.append((field.name, inner.cls, is_list))
        elif not isinstance(inner, _SCALARS):
            return None
    return _Shape(len(info.fields), tuple(nested))


def _unwrapped(type_: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """The type under the documentation that `Annotated[..., Meta(description=...)]` adds."""
    while isinstance(type_, msgspec.inspect.Metadata):
        type_ = type_.type
    return type_


def _fields(value: object) -> int | None:
    """The fields of all struct objects in `value`, or None when they cannot be counted."""
    shape = _shape(type(value)) if isinstance(value, msgspec.Struct) else None
    if shape is None:
        return None
    total = shape.fields
    for attribute, cls, is_list in shape.nested:
        held = getattr(value, attribute)
        items = held if is_list else [held]
        if _shape(cls).nested:
            for item in items:
                total += _fields(item)
        else:  # a list of flat structs, such as the events of a usage batch
            total += _shape(cls).fields * len(items)
    return total


def _counts_prove_unique(body: bytes, value: object) -> bool:
    fields = _fields(value)
    return fields is not None and msgspec.json.format(body, indent=-1).count(b'":') == fields
