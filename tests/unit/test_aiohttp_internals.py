"""The parts of aiohttp that service/http/protocol.py relies on and aiohttp does not promise to keep.

aiohttp has no hook for the answers its HTTP parser sends (aio-libs/aiohttp#3287), so protocol.py
subclasses its connection handler and uses private names. pyproject.toml bounds aiohttp to the
versions these tests passed on; when one fails after an upgrade, it names what moved: adapt
protocol.py to it (tests/integration/test_hostile_input.py proves the behaviour), then raise the bound.
"""

import asyncio
import inspect
import json
from collections import deque

import pytest
from aiohttp import http_exceptions, web, web_protocol, web_server

from service.config import from_environment
from service.http.app import create_app
from service.http.protocol import MAX_HEADERS, EnvelopeRequestHandler, protocol_options

CHANGED = "aiohttp changed an internal service/http/protocol.py relies on: "


def test_the_parse_error_aiohttp_queues_is_still_its_ErrInfo():
    err_info = getattr(web_protocol, "_ErrInfo", None)
    assert inspect.isclass(err_info), CHANGED + "web_protocol._ErrInfo (a parse error in the queue) is gone"
    error = http_exceptions.BadHttpMessage("bad")
    queued = err_info(status=400, exc=error, message="bad")
    assert (queued.status, queued.exc, queued.message) == (400, error, "bad"), (
        CHANGED + "web_protocol._ErrInfo no longer holds status, exc and message"
    )


def test_the_request_handler_still_has_the_methods_protocol_overrides():
    handler = web_protocol.RequestHandler
    assert list(inspect.signature(handler.data_received).parameters) == ["self", "data"], (
        CHANGED + "the signature of RequestHandler.data_received"
    )
    parameters = inspect.signature(handler.handle_error).parameters.values()
    assert [(p.name, p.default) for p in parameters] == [
        ("self", inspect.Parameter.empty),
        ("request", inspect.Parameter.empty),
        ("status", 500),
        ("exc", None),
        ("message", None),
    ], CHANGED + "the signature of RequestHandler.handle_error"
    assert callable(getattr(handler, "log_exception", None)), CHANGED + "RequestHandler.log_exception is gone"


def test_aiohttps_server_still_builds_each_connection_handler_from_web_server_RequestHandler():
    assert "RequestHandler" in web_server.Server.__call__.__code__.co_names, (
        CHANGED + "web_server.Server() no longer looks up the module's RequestHandler for each connection, "
        "so replacing web_server.RequestHandler has no effect"
    )


async def test_a_connection_of_our_app_gets_an_envelope_handler_with_the_state_protocol_reads(caplog):
    create_app(from_environment({}))
    assert web_server.RequestHandler is EnvelopeRequestHandler, "create_app did not install the handler"
    handler = web.Server(lambda request: None, **protocol_options())()
    # aiohttp falls back to its own handler, with a warning, when ours refuses the keyword arguments.
    assert "Failed to create request handler" not in caplog.text, caplog.text
    assert type(handler) is EnvelopeRequestHandler and handler._error_envelope
    assert isinstance(getattr(handler, "_messages", None), deque), (
        CHANGED + "RequestHandler._messages (the queue of parsed messages) is gone or no longer a deque"
    )
    assert hasattr(handler, "_current_request") and handler._current_request is None, (
        CHANGED + "RequestHandler._current_request (the request being handled) is gone"
    )


async def _empty(request: web.Request) -> web.Response:
    return web.json_response({})


@pytest.fixture
async def envelope_server(aiohttp_server):
    app = web.Application(handler_args=protocol_options())
    app.router.add_get("/", _empty)
    return await aiohttp_server(app)


async def test_too_many_headers_is_still_the_parse_error_protocol_answers_with_431(envelope_server):
    """protocol.py tells this refusal from others by aiohttp's message, "Too many headers received"."""
    headers = b"".join(b"X-H%d: %d\r\n" % (n, n) for n in range(MAX_HEADERS + 10))
    reader, writer = await asyncio.open_connection(envelope_server.host, envelope_server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    async with asyncio.timeout(10):  # not a speed test: only so a hang fails instead of stalling
        answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"431", CHANGED + f"the message for too many headers; the answer: {head!r}"
    assert json.loads(body)["error"]["type"] == "invalid_request"


async def test_the_handler_still_notes_the_start_only_for_log_access_and_requests_keep_match_info(caplog):
    """protocol.py turns `_logging_enabled` on so that aiohttp notes each request's start and calls
    log_access (where every answer is counted in /metrics), and middleware.route_of reads
    `Request._match_info`, which is None for a request the parser refused."""
    create_app(from_environment({}))
    handler = web.Server(lambda request: None, **protocol_options())()
    assert getattr(handler, "_logging_enabled", None) is True, (
        CHANGED + "RequestHandler._logging_enabled (whether a request's start is noted) is gone"
    )
    source = inspect.getsource(web_protocol.RequestHandler.start)
    assert "self._logging_enabled" in source and "log_access" in inspect.getsource(
        web_protocol.RequestHandler.finish_response
    ), CHANGED + "the start of a request is no longer noted for, or passed to, log_access"
    assert list(inspect.signature(web_protocol.RequestHandler.log_access).parameters) == [
        "self",
        "request",
        "response",
        "time",
    ], CHANGED + "the signature of RequestHandler.log_access"
    assert web.Request._match_info is None, CHANGED + "Request._match_info (None before routing) is gone"
