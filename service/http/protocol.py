"""The error envelope also for requests that aiohttp's HTTP parser refuses before any middleware runs.

A request line or a header over 8 KiB, more than 128 headers, a NUL in a header, bytes that are not
HTTP at all: aiohttp answers these from `RequestHandler.handle_error` with a text/plain body, and
has no per-application hook to change that (aio-libs/aiohttp#3287). Its server builds one
`web_server.RequestHandler` per connection with the application's `handler_args` as keyword
arguments, on every path that serves an app: `web.run_app`, gunicorn's `GunicornWebWorker` and the
tests' `TestServer` (all go through `AppRunner` and `Application._make_handler`).

So `protocol_options()`, passed as `web.Application(handler_args=...)`, makes that server build
`EnvelopeRequestHandler`s, and hands them the marker `error_envelope=True`; a connection of any
other application (no marker) answers exactly as aiohttp's own handler does.

The same handler counts every answer of the app in /metrics (service/http/middleware.py's
count_answer) where aiohttp calls the access logger, after the answer is sent: no middleware layer
for it, and the parser's refusals are counted too.

This leans on aiohttp's internals (`_ErrInfo`, `_messages`, `_current_request`, `_logging_enabled`, the module-level
`web_server.RequestHandler`): pyproject.toml bounds aiohttp, and tests/unit/test_aiohttp_internals.py
says which of them changed when an upgrade moves one.
"""

from aiohttp import http_exceptions, web, web_protocol, web_server
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from service.http.errors import error_response
from service.http.middleware import count_answer

# aiohttp's own defaults, stated here because the error messages name them.
MAX_LINE_SIZE = 8190  # the request line
MAX_FIELD_SIZE = 8190  # one header, name and value
MAX_HEADERS = 128

_HEADERS_TOO_LARGE = (
    f"The request line or its headers are too large: keep the URL and every header under "
    f"{MAX_FIELD_SIZE} bytes, and send at most {MAX_HEADERS} headers."
)


class EnvelopeRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler; its error answers are the envelope when the app asks for it."""

    __slots__ = ("_access_logging", "_error_envelope")

    def __init__(self, manager: web_server.Server, *, error_envelope: bool = False, **kwargs):
        super().__init__(manager, **kwargs)
        self._error_envelope = error_envelope
        self._access_logging = self._logging_enabled
        if error_envelope:  # aiohttp notes when a request starts only for its log_access
            self._logging_enabled = True

    def log_access(self, request: BaseRequest, response: StreamResponse, time: float | None) -> None:
        if not self._error_envelope:
            return super().log_access(request, response, time)
        seconds = self._loop.time() - time
        count_answer(request, response, seconds)
        if self._access_logging:
            self.access_logger.log(request, response, seconds)

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if self._error_envelope and len(self._messages) > queued:
            self._end_abandoned_body()

    def _end_abandoned_body(self) -> None:
        """When the framing of a body breaks (a bad chunk size, a chunk longer than it said), aiohttp
        queues the parse error behind the request that body belongs to, and drops the body's stream
        without an end: the handler reading it would wait for ever, and the error would never be
        answered. End that stream with an error instead, so the handler answers 400 at once."""
        message, _ = self._messages[-1]
        if not isinstance(message, web_protocol._ErrInfo):
            return
        current = self._current_request
        bodies = [current.content] if current is not None else []
        bodies += [payload for _, payload in list(self._messages)[:-1]]
        for body in bodies:
            if not body.is_eof():  # the one stream being fed when the parser failed
                body.set_exception(web.RequestPayloadError("the body's framing is broken"))
                body.feed_eof()  # so aiohttp, once the handler has answered, answers the error too

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if not self._error_envelope:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:  # as aiohttp's: an answer has begun, the connection is lost
            raise ConnectionError("Response is sent already, cannot send another response")
        status, type_, text = _envelope(status, exc)
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            # Not aiohttp's traceback with the raw bytes: they can hold a client's key or token.
            self.logger.info("refused a request from %s: %s", request.remote, text)
        response = error_response(status, type_, text)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        response.force_close()
        return response


def _envelope(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """Status, type and message; the message never repeats the request's bytes."""
    if isinstance(exc, http_exceptions.LineTooLong) or (
        isinstance(exc, http_exceptions.BadHttpMessage) and exc.message == "Too many headers received"
    ):
        return 431, "invalid_request", _HEADERS_TOO_LARGE
    if isinstance(exc, http_exceptions.HttpProcessingError) and 400 <= status < 500:
        return status, "invalid_request", f"The request is not valid HTTP/1.1: {_reason(exc)}."
    if status == 504:
        return 504, "service_unavailable", "The request took too long; retry in a few seconds."
    if status < 500:
        return status, "invalid_request", "The request could not be read; check how it is built."
    return status, "internal_error", "Something went wrong on our side; try again."


def _reason(exc: http_exceptions.HttpProcessingError) -> str:
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "a header name or value holds a character HTTP does not allow"
    if isinstance(exc, http_exceptions.BadStatusLine):  # also a bad method, and TLS sent to this port
        return "the request line is not METHOD /path HTTP/1.1 (is this HTTPS sent to an HTTP port?)"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return "the request target is not a valid URL"
    # llhttp's messages are "<reason>:\n\n  <the bytes>": keep the reason, never the bytes.
    reason = str(exc.message).split("\n", 1)[0].rstrip(":. ")
    if not reason or len(reason) > 100 or "b'" in reason or 'b"' in reason:
        return "it could not be parsed"
    return reason[0].lower() + reason[1:]


def protocol_options() -> dict:
    """`handler_args` for the app: aiohttp's parser limits, and the envelope for what they refuse."""
    if web_server.RequestHandler is not EnvelopeRequestHandler:
        # The class aiohttp's Server instantiates per connection; only handlers given the marker
        # below behave differently from aiohttp's own.
        web_server.RequestHandler = EnvelopeRequestHandler
    return {
        "error_envelope": True,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
    }
