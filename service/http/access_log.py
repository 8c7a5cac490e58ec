"""The access log, without the successful key verifications, and without secrets.

A gateway asks `/api/v1/auth/verify` on every request it serves: logging each 200 would write as
many lines as the gateway itself (which logs those requests already) and cost more than answering
them. Refusals and every other request are logged as usual.

No credential travels in a URL of ours, but a caller can still put one there: an sk- key pasted as a
key id, `?api_key=sk-…`, `?token=<JWT>`. The request line is logged with such values replaced by
`redacted`: anything shaped like an sk- key or a JWT, and the value of any query parameter whose name
says it holds a credential.
"""

import re
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_log import AccessLogger

VERIFY_PATH = "/api/v1/auth/verify"
SECRET = re.compile(r"sk-[0-9A-Za-z]{40,}|eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")
_CREDENTIAL_NAME = re.compile(r"key|token|secret|password|passwd|auth|signature|sig$|credential", re.I)


def redact(path_qs: str) -> str:
    """The path and query with every value that may be a credential replaced by `redacted`."""
    path, question, query = SECRET.sub("redacted", path_qs).partition("?")
    if not query:
        return path + question
    pairs = (pair.partition("=") for pair in query.split("&"))
    return f"{path}?" + "&".join(
        f"{name}={quote('redacted') if _CREDENTIAL_NAME.search(name) else value}" if equals else name
        for name, equals, value in pairs
    )


class _Redacted:
    """The request as the access log formats it: `path_qs` redacted, everything else as it was."""

    __slots__ = ("_request",)

    def __init__(self, request: web.BaseRequest):
        self._request = request

    def __getattr__(self, name: str):
        return getattr(self._request, name)

    @property
    def path_qs(self) -> str:
        return redact(self._request.path_qs)


class AccessLog(AccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status == 200 and request.path == VERIFY_PATH:
            return
        super().log(_Redacted(request), response, time)
