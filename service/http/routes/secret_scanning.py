"""`POST /api/v1/secret-scanning/github/`: GitHub's secret-scanning partner reports of leaked keys."""

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from service.app import leaks
from service.http.appkeys import KEY_CACHE, POOL, SETTINGS
from service.http.auth import Principal
from service.http.bodies import decode_json, read_bytes
from service.http.errors import ApiError
from service.http.responses import json_response
from service.http.routes.keys import metadata

routes = web.RouteTableDef()
REPORT_PATH = "/api/v1/secret-scanning/github/"
MAX_TOKENS = 1000
IDENTIFIER_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"


class ReportedToken(msgspec.Struct):
    """One token GitHub found; fields GitHub may add later are ignored."""

    token: Annotated[str, msgspec.Meta(description="the text found, e.g. an sk- key")]
    type: Annotated[str, msgspec.Meta(description="the pattern's name, as registered with GitHub")]
    url: Annotated[str | None, msgspec.Meta(description="where it was found")] = None
    source: Annotated[str | None, msgspec.Meta(description="content, commit, gist, …")] = None


Report = Annotated[list[ReportedToken], msgspec.Meta(max_length=MAX_TOKENS)]


class Label(msgspec.Struct):
    token_hash: Annotated[str, msgspec.Meta(description="hex SHA-256 of the reported token")]
    token_type: Annotated[str, msgspec.Meta(description="the type, as reported")]
    label: Literal["true_positive", "false_positive"]


Labels = list[Label]


def _refuse_nul(report: list[ReportedToken]) -> None:
    """400 for a NUL character, which no key holds and PostgreSQL cannot store (in the url)."""
    for index, item in enumerate(report):
        for name in ("token", "type", "url", "source"):
            if "\x00" in (getattr(item, name) or ""):
                raise ApiError(
                    400, "invalid_request", f"$[{index}].{name} holds a NUL character (\\u0000); remove it."
                )


@routes.post(REPORT_PATH)
async def github_report(request: web.Request) -> web.Response:
    signature = request.headers.get(SIGNATURE_HEADER)
    key = leaks.signing_key(
        request.app[SETTINGS].secret_scanning_keys, request.headers.get(IDENTIFIER_HEADER), signature
    )
    body = await read_bytes(request)
    leaks.check_signature(key, signature, body)  # on the raw bytes, before they are parsed
    report = decode_json(body, Report)
    _refuse_nul(report)
    pool = request.app[POOL]
    findings = await leaks.act_on_report(
        pool, [(item.token, item.url) for item in report], metadata(request, Principal(leaks.ACTOR, ""))
    )
    if any(finding.revoked for finding in findings):
        await request.app[KEY_CACHE].after_own_command(pool)
    labels = [
        Label(finding.token_hash, item.type, "true_positive" if finding.true_positive else "false_positive")
        for finding, item in zip(findings, report, strict=True)
    ]
    return json_response(labels)
