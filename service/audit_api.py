"""`GET /api/v1/audit/events`: the log in order, with its hash chain, for auditors."""

import hmac

import msgspec
from aiohttp import web

from events.account import ACCOUNT_ID_RULE, is_account_id
from service import audit
from service.appkeys import POOL, SETTINGS, TOKENS
from service.auth import bearer_token
from service.errors import ApiError
from service.responses import AuditPage

routes = web.RouteTableDef()
MAX_PAGE = 10_000


def _auditor(request: web.Request) -> None:
    """The service token, or an account JWT carrying the role `auditor`."""
    token = bearer_token(request, "the service token or an auditor's JWT")
    if hmac.compare_digest(token.encode(), request.app[SETTINGS].service_token.encode()):
        return
    if "auditor" not in request.app[TOKENS].verify(token).roles:
        raise ApiError(403, "forbidden", "Reading the audit log needs the role 'auditor' in your token.")


def _whole_number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name, str(default))
    # ASCII digits only ("²".isdigit() is true and int() refuses it), and few: int() refuses 4,300.
    if not (text.isascii() and text.isdigit() and len(text) <= 20) or not low <= int(text) <= high:
        raise ApiError(400, "invalid_request", f"{name} must be a whole number from {low} to {high}.")
    return int(text)


@routes.get("/api/v1/audit/events")
async def audit_events(request: web.Request) -> web.Response:
    _auditor(request)
    after = _whole_number(request, "after", 0, 0, 2**63 - 1)
    limit = _whole_number(request, "limit", 1000, 1, MAX_PAGE)
    account_id = request.query.get("account_id")
    if account_id is not None and not is_account_id(account_id):
        raise ApiError(400, "invalid_request", f"account_id must be {ACCOUNT_ID_RULE}.")
    async with request.app[POOL].acquire() as connection:
        page = await audit.events_page(connection, after, limit, account_id=account_id)
    next_after = page[-1]["position"] if page else after
    body = msgspec.json.encode(AuditPage(data=page, next_after=next_after))
    return web.Response(body=body, content_type="application/json")
