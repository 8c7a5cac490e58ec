"""The access log, without the successful key verifications.

A gateway asks `/api/v1/auth/verify` on every request it serves: logging each 200 would write as
many lines as the gateway itself (which logs those requests already) and cost more than answering
them. Refusals and every other request are logged as usual.
"""

from aiohttp import web
from aiohttp.web_log import AccessLogger

VERIFY_PATH = "/api/v1/auth/verify"


class AccessLog(AccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status == 200 and request.path == VERIFY_PATH:
            return
        super().log(request, response, time)
