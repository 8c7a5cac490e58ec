"""Management of an account's keys, at the paths of the public authentication page."""

import re
import uuid
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from events import apikey
from events.account import Command, CreateKey, RevokeKey, RotateKey, UpdateKey
from events.errors import KeyNotFound
from events.log import account_stream
from events.model import account_event_decoder, public_fields
from projections import accounts as accounts_projection
from projections import usage
from projections.key_rows import key_rows
from service.app import commands, time_travel
from service.http import params
from service.http.appkeys import KEY_CACHE, POOL, TOKENS
from service.http.auth import Principal, bearer_token
from service.http.bodies import read_json
from service.http.key_objects import key_object, key_objects, one_key_object
from service.http.requests import CreateKeyBody, RotateKeyBody, UpdateKeyBody
from service.http.responses import CreatedKey, KeyEvent, KeyHistory, KeyList, KeyObject, json_response
from service.http.routes import checkpoints
from service.store import eventstore

routes = web.RouteTableDef()
BASE = "/api/v1/accounts/user/api-keys"
# `create/` is the create action, never a key id: so GET on it answers 405 (Allow: POST), not 404.
KEY = BASE + "/{key_id:(?!create/)[^/]+}"
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def key_id_of(request: web.Request) -> str:
    """The key id in the path. Text no key id can be (a NUL, "..", a 5,000-character id) is a key
    that does not exist: 404, before the database is asked."""
    key_id = request.match_info["key_id"]
    if not apikey.is_key_id(key_id):
        raise KeyNotFound()
    return key_id


def user(request: web.Request) -> Principal:
    return request.app[TOKENS].verify(bearer_token(request, "your account's JWT"))


def metadata(request: web.Request, principal: Principal) -> dict:
    request_id = request.headers.get("X-Request-Id", "")
    return {
        "actor": principal.subject,
        "request_id": request_id if _REQUEST_ID.match(request_id) else str(uuid.uuid4()),
        "client": request.remote,
    }


async def _apply(request: web.Request, principal: Principal, command: Command, key_id: str) -> KeyObject:
    """Run a lifecycle command; this process's key cache reflects it before the key is answered."""
    pool = request.app[POOL]
    await commands.execute(pool, principal.account_id, command, metadata(request, principal))
    await request.app[KEY_CACHE].after_own_command(pool)
    return await one_key_object(pool, principal.account_id, key_id)


async def _created(
    request: web.Request, principal: Principal, command: CreateKey | RotateKey, key_id: str, secret: str
) -> web.Response:
    """The new key's object with the full key: the one answer that ever holds it. It is made from the
    event that created the key, as the projection has it: a new key has no usage to read."""
    pool = request.app[POOL]
    _, stored = await commands.execute(pool, principal.account_id, command, metadata(request, principal))
    await request.app[KEY_CACHE].after_own_command(pool)
    events = [account_event_decoder.decode(event.data) for event in stored]
    [row] = key_rows([event for event in events if getattr(event, "key_id", None) == key_id])
    if row["expires_at"] is not None:  # in UTC, as the projection's timestamptz gives it back
        row["expires_at"] = row["expires_at"].astimezone(UTC)
    now = datetime.now(UTC)
    created = key_object(row, None, usage.window(now.date()), now)
    return json_response(CreatedKey(**msgspec.structs.asdict(created), key=secret), status=201)


@routes.post(f"{BASE}/create/")
async def create_key(request: web.Request) -> web.Response:
    principal = user(request)
    body = await read_json(request, CreateKeyBody)
    secret = apikey.generate()
    command = CreateKey(
        key_id=apikey.new_key_id(),
        name=body.name,
        key_digest=apikey.digest(secret),
        last4=apikey.last4(secret),
        expires_at=body.expires_at,
        monthly_spend_limit_chf=body.monthly_spend_limit_chf,
    )
    return await _created(request, principal, command, command.key_id, secret)


@routes.get(f"{BASE}/")
async def list_keys(request: web.Request) -> web.Response:
    principal = user(request)
    as_of = params.as_of(request.query)
    async with request.app[POOL].acquire() as connection:
        if as_of is None:
            keys = await key_objects(connection, principal.account_id)
        else:
            past = await time_travel.keys_as_of(connection, principal.account_id, as_of)
            keys = [key_object(row, past.usage.get(row["key_id"]), past.days, as_of) for row in past.rows]
    return json_response(KeyList(keys))


@routes.get(KEY + "/")
async def view_key(request: web.Request) -> web.Response:
    principal = user(request)
    return json_response(await one_key_object(request.app[POOL], principal.account_id, key_id_of(request)))


@routes.patch(KEY + "/update/")
async def update_key(request: web.Request) -> web.Response:
    principal = user(request)
    body = await read_json(request, UpdateKeyBody)
    key_id = key_id_of(request)
    command = UpdateKey(key_id, body.name, body.expires_at, body.monthly_spend_limit_chf)
    return json_response(await _apply(request, principal, command, key_id))


@routes.post(KEY + "/rotate/")
async def rotate_key(request: web.Request) -> web.Response:
    principal = user(request)
    body = await read_json(request, RotateKeyBody) if request.can_read_body else RotateKeyBody()
    key_id, secret = key_id_of(request), apikey.generate()
    command = RotateKey(
        key_id=key_id,
        new_key_id=apikey.new_key_id(),
        key_digest=apikey.digest(secret),
        last4=apikey.last4(secret),
        grace_period_seconds=body.grace_period_seconds,
    )
    return await _created(request, principal, command, command.new_key_id, secret)


@routes.post(KEY + "/revoke/")
async def revoke_key(request: web.Request) -> web.Response:
    principal = user(request)
    key_id = key_id_of(request)
    return json_response(await _apply(request, principal, RevokeKey(key_id), key_id))


@routes.get(KEY + "/events/")
async def key_history(request: web.Request) -> web.Response:
    principal = user(request)
    key_id, proof = key_id_of(request), checkpoints.wants_proof(request)
    pool = request.app[POOL]
    async with pool.acquire() as connection:
        if await accounts_projection.get_key(connection, principal.account_id, key_id) is None:
            raise KeyNotFound()
        stream = await eventstore.read_stream(connection, account_stream(principal.account_id))
        history = []
        for stored in stream:
            fields = public_fields(account_event_decoder.decode(stored.data))
            if fields.get("key_id") != key_id:
                continue
            meta = msgspec.json.decode(stored.metadata)
            history.append(
                KeyEvent(
                    position=stored.position,
                    version=stored.version,
                    type=stored.type,
                    recorded_at=stored.recorded_at,
                    actor=meta.get("actor"),
                    request_id=meta.get("request_id"),
                    data=fields,
                )
            )
        if not proof:
            return json_response(KeyHistory(history))
        note, proofs = await checkpoints.history_proofs(request, connection, [e.position for e in history])
    for event in history:
        event.leaf_index, event.hash, event.inclusion_proof = proofs[event.position]
    return json_response(KeyHistory(history, checkpoint=note))
