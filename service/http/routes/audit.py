"""`GET /api/v1/audit/events`: the log in order, with its hash chain, for auditors."""

import hmac

from aiohttp import web

from events.rules import ACCOUNT_ID_RULE, is_account_id
from service.app import audit
from service.http import params
from service.http.appkeys import POOL, SETTINGS, TOKENS
from service.http.auth import bearer_token
from service.http.errors import ApiError
from service.http.responses import AuditPage, json_response

routes = web.RouteTableDef()
MAX_PAGE = 10_000


def require_auditor(request: web.Request) -> None:
    """The service token, or an account JWT carrying the role `auditor`."""
    token = bearer_token(request, "the service token or an auditor's JWT")
    if hmac.compare_digest(token.encode(), request.app[SETTINGS].service_token.encode()):
        return
    if "auditor" not in request.app[TOKENS].verify(token).roles:
        raise ApiError(403, "forbidden", "Reading the audit log needs the role 'auditor' in your token.")


@routes.get("/api/v1/audit/events")
async def audit_events(request: web.Request) -> web.Response:
    require_auditor(request)
    after = params.whole_number(request, "after", 0, 0, 2**63 - 1)
    limit = params.whole_number(request, "limit", 1000, 1, MAX_PAGE)
    account_id = request.query.get("account_id")
    if account_id is not None and not is_account_id(account_id):
        raise ApiError(400, "invalid_request", f"account_id must be {ACCOUNT_ID_RULE}.")
    async with request.app[POOL].acquire() as connection:
        page = await audit.events_page(connection, after, limit, account_id=account_id)
    next_after = page[-1]["position"] if page else after
    return json_response(AuditPage(data=page, next_after=next_after))
